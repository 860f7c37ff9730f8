"""What a recurrent model's parameters are: the cell, the readout, and (DNI) what is held with them, by group."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workers.numerics.auxtask import AUX, AuxHead
from workers.numerics.cells import LSTMCell, TanhCell
from workers.numerics.inflight import make_synthesizer
from workers.numerics.layers import Head
from workers.numerics.optimizers import SYNTH

if TYPE_CHECKING:
    from protocol.wireconfig import WireConfig

CELLS = {"tanh": TanhCell, "lstm": LSTMCell}


def make_model(cfg: WireConfig, index: int) -> tuple:
    """The cell and readout box `index` starts from; index 0 is the tied set every box shares."""
    rng = np.random.default_rng([cfg.seed, index])
    cell = CELLS[cfg.cell](cfg.n_in, cfg.units, rng)
    return cell, Head(cfg.units, cfg.n_classes, rng)


def synth_rng(cfg: WireConfig, index: int) -> np.random.Generator:
    """Box `index`'s synthesizer's; index 0: the shared synthesizer's (--shared-synth), the same in every process."""
    return np.random.default_rng([cfg.seed, index, 1])


def shares_synth(cfg: WireConfig) -> bool:
    """One synthesizer for every boundary, held with the tied weights (--shared-synth)."""
    return cfg.shared_synth and cfg.mode in ("dni", "cdni")


def has_aux(cfg: WireConfig) -> bool:
    """DNI + Aux (--aux): the core also predicts the synthetic gradient a box further ahead."""
    return cfg.aux and cfg.mode in ("dni", "cdni")


def model_groups(cfg: WireConfig, cell, readout, synth: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """A box's parameters by group, as the optimizer steps them and the service holds them: the cell and
    readout; with --aux the auxiliary head; with --shared-synth the one synthesizer (`synth`: a box's own
    copy of it, else a fresh one)."""
    out = groups(cell, readout)
    if has_aux(cfg):
        out[AUX] = AuxHead(cell.state_size).params
    if shares_synth(cfg):
        out[SYNTH] = synth or make_synthesizer(cfg, cell.state_size, cfg.n_classes, synth_rng(cfg, 0)).params
    return out


def groups(cell, readout) -> dict[str, dict[str, np.ndarray]]:
    """The two parameter groups every model has, by the prefix their arrays travel under."""
    return {"cell": cell.params, "readout": readout.params}


def named(by_group: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Groups of arrays under one namespace ("cell.Wx", "readout.W", ...), as on the wire."""
    return {f"{group}.{k}": v for group, arrays in by_group.items() for k, v in arrays.items()}


def grouped(grads: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Wire-named arrays ("cell.Wx", ...) back into their groups: the inverse of `named`."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, g in grads.items():
        group, key = name.split(".", 1)
        out.setdefault(group, {})[key] = g
    return out


def add_into(total: dict[str, np.ndarray], more: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """total += more, name by name (new arrays: either may be a read-only wire buffer)."""
    for k, g in more.items():
        total[k] = total[k] + g if k in total else g
    return total
