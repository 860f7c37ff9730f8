"""Checkpoints: every stage's arrays plus the config in one .npz, written atomically; no pickle."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

MODEL_FILE = "model.npz"


def write_json(path: Path, obj) -> None:
    """Write JSON to a temporary file and rename it: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def save(run_dir: Path, config: dict, states: dict[int, dict[str, np.ndarray]], step: int) -> Path:
    arrays = {f"stage{k}/{name}": a for k, state in states.items() for name, a in state.items()}
    # The config rides inside the archive as a plain string array, so weights and the
    # config that built them can never be out of step.
    arrays["config"] = np.array(json.dumps({**config, "step": step}))
    path = run_dir / MODEL_FILE
    tmp = run_dir / (MODEL_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    write_json(run_dir / "config.json", config)
    return path


def load(run_dir: Path) -> tuple[dict, dict[int, dict[str, np.ndarray]]]:
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            config = json.loads(str(z["config"]))
            states: dict[int, dict[str, np.ndarray]] = {}
            for key in z.files:
                if key != "config":
                    stage, name = key.split("/", 1)
                    states.setdefault(int(stage.removeprefix("stage")), {})[name] = z[key]
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"corrupt checkpoint {path}: {exc}") from None
    return config, states
