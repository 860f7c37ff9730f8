"""Run configuration: one flat block of defaults, overridable by a TOML file, then by flags."""
from __future__ import annotations

import argparse
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from protocol import liveness


def opt(default, help: str):
    return field(default=default, metadata={"help": help})


class ConfigError(ValueError):
    """A bad option value; the message names the option."""


@dataclass
class Config:
    # the task
    data: str = opt("", "directory with the MNIST IDX files; empty = the built-in generated task")
    classes: str = opt("", "keep only these digits, e.g. 0,1 (empty = all)")
    train_subset: int = opt(0, "use only the first N training examples (0 = all)")
    # the network
    centre: bool = opt(True, "ff: subtract each input feature's training-set mean (--no-centre: the inputs as they are)")
    hidden: str = opt("256,256", "hidden layer sizes; each hidden layer is one worker process")
    mode: str = opt("cdni", "dni | cdni | backprop; --model rnn also truncated (BPTT cut at box boundaries)")
    optimizer: str = opt("adam", "sgd (momentum 0.9) | adam, for the layers")
    lr: float = opt(1e-3, "learning rate of the layers")
    schedule: str = opt("cosine", "layers' rate over the run: constant | cosine (annealed to 0)")
    synth_hidden: int = opt(0, "synthesizer hidden units: 0 = linear (as in the paper); N = N fixed random ReLU "
                               "features of h with a learned linear readout")
    bp_lambda: float = opt(1.0, "ff: what a stage sends down as the target for the stage below's synthesizer: "
                                "its own received target (1, the true gradient) mixed with its synthetic gradient (0, the "
                                "paper's bootstrap, sent at once), pushed back through its Jacobian: BP(lambda)")
    synth_lr: float = opt(0.3, "Adam rate of every synthesizer; its targets are per-example gradients normalised "
                               "to unit RMS, so this is a relative step and one value serves every model and task")
    # recurrent networks in time boxes (--model rnn; see coordinator/plans/recurrent.py)
    model: str = opt("ff", "ff (a process per layer) | rnn (a process per time box)")
    task: str = opt("mnist01", "rnn: mnist01 | mnist01-chunks | seqmnist | copy")
    boxes: int = opt(4, "rnn: time boxes K, one worker process each")
    steps_per_box: int = opt(1, "rnn: recurrent steps T in each box (the truncation)")
    cell: str = opt("tanh", "rnn: tanh | lstm")
    units: int = opt(128, "rnn: width of the recurrent cell")
    untied: bool = opt(False, "rnn: each box its own weights (default: tied, shared through a parameter service)")
    max_staleness: int = opt(4, "rnn, tied: a box computes with weights at most this many updates old")
    synth_scale: float = opt(0.1, "rnn: factor on the synthetic gradient seeding each box's BPTT (the paper's 0.1)")
    copy_length: int = opt(10, "rnn copy task: the longest sequence the curriculum grows to (2L+1 <= K*T)")
    copy_batches: int = opt(200, "rnn copy task: training batches per epoch (the length grows after each solved epoch)")
    # the schedule
    epochs: int = opt(5, "passes over the training set")
    batch_size: int = opt(128, "training batch size")
    eval_batch: int = opt(1000, "evaluation batch size")
    window: int = opt(2, "batches in flight at most (credit); more in flight means staler synthesizer targets")
    credit: str = opt("link", "how --window is held: link (ff: each stage sends a batch on while fewer than "
                              "--window of its batches have no target back; the coordinator waits for stage 1) | "
                              "coordinator (the coordinator waits for the head's report of each batch; rnn always)")
    seed: int = opt(0, "seed of every initialisation and shuffle")
    # the run
    out: str = opt("", "run directory (default runs/<mode>-<time>)")
    log_every: int = opt(50, "steps between metric flushes")
    checkpoint_every: int = opt(1000, "steps between checkpoints (0 = no limit in steps)")
    checkpoint_seconds: float = opt(30.0, "seconds of training between checkpoints, the most work a restart "
                                    "loses (0 = no limit in time; both 0: at the end only)")
    max_restarts: int = opt(3, "lost workers to replace (restarting every stage from the last checkpoint) "
                            "before the run stops")
    rejoin_timeout: float = opt(120.0, "seconds to wait for a replacement `dni worker` to register after one "
                                "is lost (dni coordinator; dni run starts one itself)")
    heartbeat: float = opt(1.0, "seconds; a peer silent for 3 intervals is dead")
    stall_timeout: float = opt(liveness.STALL_TIMEOUT_S, "seconds the pipeline may make no progress, every "
                               "worker alive, before the run stops with an error saying where")
    overwrite: bool = opt(False, "reuse an --out directory that already holds a run (its files are replaced)")
    progress: bool = opt(True, "show a live progress line")

    def validate(self) -> "Config":
        modes = ("dni", "cdni", "backprop") + (("truncated",) if self.model == "rnn" else ())
        choices = {"model": ("ff", "rnn"), "mode": modes, "optimizer": ("sgd", "adam"),
                   "schedule": ("constant", "cosine"), "task": ("mnist01", "mnist01-chunks", "seqmnist", "copy"),
                   "cell": ("tanh", "lstm"), "credit": ("link", "coordinator")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("epochs", "batch_size", "eval_batch", "window", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("train_subset", "synth_hidden", "checkpoint_every", "checkpoint_seconds", "max_restarts"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "synth_lr", "synth_scale", "heartbeat", "stall_timeout", "rejoin_timeout"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"--{name.replace('_', '-')} must be positive and finite, got {getattr(self, name)}")
        if not 0.0 <= self.bp_lambda <= 1.0:
            raise ConfigError(f"--bp-lambda must lie in [0, 1], got {self.bp_lambda}")
        if not math.isfinite(self.checkpoint_seconds):
            raise ConfigError(f"--checkpoint-seconds must be finite (0 = no limit in time), got {self.checkpoint_seconds}")
        if not liveness.MIN_HEARTBEAT_S <= self.heartbeat <= liveness.MAX_HEARTBEAT_S:
            raise ConfigError(f"--heartbeat must lie in [{liveness.MIN_HEARTBEAT_S}, {liveness.MAX_HEARTBEAT_S:.0f}] "
                              f"seconds, got {self.heartbeat}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        self.hidden_sizes()
        if self.class_list() and not self.data:
            raise ConfigError("--classes picks MNIST digits: give --data DIR too (the generated task has no digits)")
        if self.model == "rnn":
            self._validate_rnn()
        return self

    def _validate_rnn(self) -> None:
        for name in ("boxes", "steps_per_box", "units", "copy_length", "copy_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_staleness < 0:
            raise ConfigError(f"--max-staleness must be >= 0, got {self.max_staleness}")
        steps = self.boxes * self.steps_per_box
        if self.task == "seqmnist" and steps != 28:
            raise ConfigError(f"--task seqmnist has 28 steps (rows): --boxes x --steps-per-box is {steps}")
        if self.task == "mnist01-chunks" and 784 % steps:
            raise ConfigError(f"--task mnist01-chunks cuts 784 pixels into --boxes x --steps-per-box = {steps} "
                              f"chunks: {steps} must divide 784")
        if self.task == "copy" and steps < 2 * self.copy_length + 1:
            raise ConfigError(f"--task copy: length {self.copy_length} takes {2 * self.copy_length + 1} steps, "
                              f"more than --boxes x --steps-per-box = {steps}")
        if self.task == "copy" and self.mode == "cdni":
            raise ConfigError("--mode cdni conditions on a label per sequence; the copy task has none")
        if self.task.startswith("mnist01") and self.classes not in ("", "0,1"):
            raise ConfigError(f"--classes: --task {self.task} is the digits 0 and 1, got {self.classes!r}")

    def cache(self) -> int:
        """Batches a stage keeps awaiting their targets: these arrive within a few windows;
        beyond that a batch is dropped and counted."""
        return 4 * self.window + 16

    def hidden_sizes(self) -> list[int]:
        sizes = _int_list(self.hidden, "hidden")
        if not sizes or min(sizes) < 1:
            raise ConfigError(f"--hidden: need one or more positive sizes, got {self.hidden!r}")
        return sizes

    def class_list(self) -> list[int]:
        classes = _int_list(self.classes, "classes")
        if len(set(classes)) != len(classes) or (classes and (len(classes) < 2 or min(classes) < 0 or max(classes) > 9)):
            raise ConfigError(f"--classes: need two or more distinct digits 0-9, got {self.classes!r}")
        return classes


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--{name}: expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field; defaults stay None so we can tell what the user set."""
    parser.add_argument("--config", metavar="FILE", help="TOML file of options (flags override it)")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{f.metadata['help']} (default: {f.default})")
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, type=kind, default=None, metavar=f.name.upper(),
                                help=f"{f.metadata['help']} (default: {f.default!r})")


def given(args: argparse.Namespace) -> dict:
    """The options the user set: TOML file < flags."""
    values = load_toml(Path(args.config)) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k in _NAMES and v is not None})
    return values


def from_args(args: argparse.Namespace) -> Config:
    """Defaults < TOML file < flags, validated."""
    return Config(**{**asdict(Config()), **given(args)}).validate()


# What a run saved before an option existed did: a resumed old run, or an old checkpoint
# evaluated, keeps training and scoring as it was trained.
BEFORE = {"bp_lambda": 0.0, "centre": False}

# What a resumed run may change: how long it trains, how it runs, where the data now lives.
RESUMABLE = ("epochs", "data", "credit", "progress", "log_every", "checkpoint_every", "checkpoint_seconds",
             "max_restarts", "rejoin_timeout", "heartbeat", "stall_timeout")


def resumed(saved: dict, args: argparse.Namespace, run_dir: str) -> Config:
    """The saved run's options; given ones must agree, but for RESUMABLE ones and a larger --epochs."""
    values = {**asdict(Config()), **BEFORE, **{k: v for k, v in saved.items() if k in _NAMES}, "out": run_dir}
    for name, value in given(args).items():
        if name == "overwrite" and value:
            raise ConfigError(f"--overwrite: a resumed run continues the run in {run_dir}, it does not replace it")
        if name == "overwrite":
            continue
        if name == "out" and Path(value).resolve() != Path(run_dir).resolve():
            raise ConfigError(f"--out {value}: a resumed run stays in its directory {run_dir}")
        if name in RESUMABLE:
            if name == "epochs" and value < saved["epochs"]:
                raise ConfigError(f"--epochs {value}: the run was set to {saved['epochs']}; resuming can only add epochs")
            values[name] = value
        elif name != "out" and value != values[name]:
            raise ConfigError(f"--{name.replace('_', '-')} {value!r}: the run in {run_dir} has {values[name]!r}, "
                              f"and a resumed run keeps its options (but " + ", ".join("--" + n.replace("_", "-") for n in RESUMABLE) + ")")
    return Config(**values).validate()


_NAMES = {f.name for f in fields(Config)}


def load_toml(path: Path) -> dict:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {path}") from None
    except OSError as exc:   # a directory, unreadable, ...
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    known = {f.name: f for f in fields(Config)}
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"--config {path}: unknown option {key!r}")
        if known[name].type == "str" and isinstance(value, list):  # hidden = [256, 256]
            value = ",".join(map(str, value))
        expected = {"int": int, "float": (int, float), "str": str, "bool": bool}[known[name].type]
        if isinstance(value, bool) and known[name].type != "bool" or not isinstance(value, expected):
            raise ConfigError(f"--config {path}: {key} should be {known[name].type}, got {value!r}")
        out[name] = float(value) if known[name].type == "float" else value
    return out
