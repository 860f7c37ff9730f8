"""Training state as one flat dict of named arrays: parts under prefixes, counters as 0-d arrays, strict loading."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Stateful(Protocol):
    def state(self) -> dict[str, np.ndarray]:
        """Live arrays (parameters, moments) by name, and counters as fresh 0-d arrays."""

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        """Take `saved` (names and shapes already checked against state())."""


def join(**parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{"layer": {"W": a}} -> {"layer.W": a}."""
    return {f"{prefix}.{k}": v for prefix, arrays in parts.items() for k, v in arrays.items()}


def part(saved: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays under `prefix.`, without it: the inverse of join for one part."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in saved.items() if k.startswith(head)}


def copy_into(live: dict[str, np.ndarray], saved: dict[str, np.ndarray]) -> None:
    # In place: optimizers and callers hold references to these very arrays.
    for k, a in live.items():
        a[...] = saved[k]


def counter(value: int) -> np.ndarray:
    return np.array(value, np.int64)


def restore(obj: Stateful, saved: dict[str, np.ndarray], what: str) -> None:
    """Load a full state into obj, refusing a missing, extra or misshapen array (ValueError naming it)."""
    own = obj.state()
    if set(own) != set(saved):
        missing, extra = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
        raise ValueError(f"{what}: the checkpoint lacks {missing} and has unexpected {extra}")
    for k, a in own.items():
        if a.shape != np.shape(saved[k]):
            raise ValueError(f"{what}: {k} has shape {np.shape(saved[k])}, expected {a.shape}")
    obj.load_state(saved)
