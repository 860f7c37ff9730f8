"""Run configuration: the options protocol/options.py declares, as defaults < TOML file < flags, checked."""
from __future__ import annotations

import argparse
import math
import tomllib
from dataclasses import asdict, field, make_dataclass
from pathlib import Path

from coordinator import lists
from protocol.options import BOTH, BY_NAME, GROUPS, OPTIONS, SYNTHETIC, Option
from workers.numerics.conv import stage_pools
from workers.numerics.sequence_tasks import PER_STEP_TASKS, copy_steps


class ConfigError(ValueError):
    """A bad option value; the message names the option."""


class Config(make_dataclass("Options", [(o.name, o.type, field(default=o.default)) for o in OPTIONS])):
    """One field per declared option; what a run is set to."""

    def validate(self) -> "Config":
        for option in OPTIONS:
            _check(option, getattr(self, option.name), self.model)
        self.hidden_sizes()
        self.conv_pools()
        if self.class_list() and not self.data:
            raise ConfigError("--classes picks MNIST digits: give --data DIR too (the generated task has no digits)")
        if self.model == "rnn":
            self._validate_rnn()
        if self.mode == "gpipe":
            self._validate_gpipe()
        self._validate_unlock()
        return self

    def _validate_unlock(self) -> None:
        """The options that unlock a stage further need its synthesizers: a feed-forward dni or cdni run."""
        unlocks = self.model == "ff" and self.mode in SYNTHETIC
        if self.credit == "taken" and not unlocks:
            raise ConfigError("--credit taken returns a link's credit before the batch's target: it needs --mode "
                              f"dni or cdni (stages that learn from their synthesizers), not --mode {self.mode}")
        if self.p_update != 1 and not unlocks:
            raise ConfigError(f"--p-update {self.p_update:g} skips updates of stages that learn from "
                              "synthesizers: it needs --model ff and --mode dni or cdni, "
                              f"not --model {self.model} --mode {self.mode}")
        if not self.synthetic_inputs:
            return
        if not unlocks:
            raise ConfigError("--synthetic-inputs lets stages update from synthesizers of their input and "
                              "gradient: it needs --model ff and --mode dni or cdni, "
                              f"not --model {self.model} --mode {self.mode}")
        if self.credit != "coordinator":
            raise ConfigError("--synthetic-inputs: the coordinator feeds every stage, under its own credit: "
                              f"give --credit coordinator, not --credit {self.credit}")
        if self.feed == "stage":
            raise ConfigError("--synthetic-inputs: the coordinator feeds every stage the network input: give "
                              "--feed coordinator, not --feed stage")
        if self.bp_lambda == 0:
            raise ConfigError("--synthetic-inputs with --bp-lambda 0 would bootstrap the targets below from "
                              "synthetic inputs: give --bp-lambda above 0")

    def _validate_gpipe(self) -> None:
        if self.micro_batches > self.batch_size:
            raise ConfigError(f"--micro-batches {self.micro_batches} is more than --batch-size {self.batch_size}: "
                              "a micro-batch needs an example at least")
        if self.batch_size % self.micro_batches:
            raise ConfigError(f"--micro-batches {self.micro_batches} does not divide --batch-size {self.batch_size} "
                              "into equal micro-batches")

    def _validate_rnn(self) -> None:
        if self.conv_filters():
            raise ConfigError("--conv: conv stages are feed-forward only (--model ff)")
        if self.eval_every and self.task in PER_STEP_TASKS:
            raise ConfigError(f"--eval-every holds out a validation split of images: --task {self.task} generates "
                              "its sequences (give an MNIST task)")
        if self.feed != "coordinator":
            raise ConfigError(f"--feed {self.feed}: stage 1 of a feed-forward network reads the training set itself; "
                              "the coordinator feeds every time box (--model ff only)")
        if self.shared_synth and self.untied:
            raise ConfigError("--shared-synth holds one synthesizer with the tied weights: it cannot go with --untied")
        steps = self.boxes * self.steps_per_box
        if self.task == "seqmnist" and steps != 28:
            raise ConfigError(f"--task seqmnist has 28 steps (rows): --boxes x --steps-per-box is {steps}")
        if self.task == "mnist01-chunks" and 784 % steps:
            raise ConfigError(f"--task mnist01-chunks cuts 784 pixels into --boxes x --steps-per-box = {steps} "
                              f"chunks: {steps} must divide 784")
        if self.task in PER_STEP_TASKS:
            need = copy_steps(self.copy_length, self.copy_repeats if self.task == "repeat-copy" else 0)
            if steps < need:
                raise ConfigError(f"--task {self.task}: length {self.copy_length} takes {need} steps, "
                                  f"more than --boxes x --steps-per-box = {steps}")
            if self.mode == "cdni":
                raise ConfigError(f"--mode cdni conditions on a label per sequence; --task {self.task} has none")
        elif self.stream:
            raise ConfigError(f"--stream continues each batch's sequences in the batch --window later, which needs "
                              f"batches of one size: --task copy or repeat-copy, not {self.task}")
        if self.task.startswith("mnist01") and self.classes not in ("", "0,1"):
            raise ConfigError(f"--classes: --task {self.task} is the digits 0 and 1, got {self.classes!r}")

    def listed(self, where: str) -> dict:
        """The values of this model's options marked `where`: wire, saved or summary."""
        return {o.name: getattr(self, o.name) for o in OPTIONS if getattr(o, where) and o.model in (BOTH, self.model)}

    def hidden_sizes(self) -> list[int]:
        sizes = lists.parse(self.hidden, "--hidden", error=ConfigError)
        if not sizes or min(sizes) < 1:
            raise ConfigError(f"--hidden: need one or more positive sizes, got {self.hidden!r}")
        return sizes

    def conv_filters(self) -> list[int]:
        """--conv: each conv stage's filter count, in order (empty: no conv stage)."""
        return lists.parse(self.conv, "--conv", low=1, error=ConfigError)

    def conv_pools(self) -> list[int]:
        """--pool: each conv stage's pooling, in order (one value: every stage's)."""
        pools = lists.parse(self.pool, "--pool", low=1, required=True, error=ConfigError)
        stages = len(self.conv_filters())
        if len(pools) > 1 and len(pools) != stages:
            raise ConfigError(f"--pool {self.pool}: {len(pools)} entries for --conv's {stages} stages "
                              "(give one per conv stage, or one for all)")
        return stage_pools(self.pool, stages)

    def class_list(self) -> list[int]:
        classes = lists.parse(self.classes, "--classes", error=ConfigError)
        digits = len(classes) >= 2 and 0 <= min(classes) and max(classes) <= 9
        if len(set(classes)) != len(classes) or (classes and not digits):
            raise ConfigError(f"--classes: need two or more distinct digits 0-9, got {self.classes!r}")
        return classes


def _check(option: Option, value, model: str) -> None:
    """The option's own checks: its choices (under `model`), its range; floats must be finite."""
    allowed = option.choices + (option.rnn_choices if model == "rnn" else option.ff_choices)
    if value in option.ff_choices and model != "ff":
        raise ConfigError(f"{option.flag} {value} is feed-forward only: it needs --model ff, not --model {model}")
    if allowed and value not in allowed:
        raise ConfigError(f"{option.flag}: {value!r} is not one of {', '.join(allowed)}")
    if option.positive and not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{option.flag} must be positive and finite, got {value}")
    if option.type is float and not math.isfinite(value):
        raise ConfigError(f"{option.flag} must be finite, got {value}")
    if option.high is not None and not option.low <= value <= option.high:
        raise ConfigError(f"{option.flag} must lie in {'(' if option.positive else '['}{option.low:g}, "
                          f"{option.high:g}], got {value}")
    if option.low is not None and value < option.low:
        raise ConfigError(f"{option.flag} must be at least {option.low}, got {value}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option, in its group's section of --help; defaults stay None so we can tell what the user set."""
    parser.add_argument("--config", metavar="FILE", help="TOML file of options (flags override it)")
    sections = {group: parser.add_argument_group(group) for group in GROUPS}
    for o in OPTIONS:
        text = o.help if o.model == BOTH else f"{o.model}: {o.help}"
        if o.type is bool:
            sections[o.group].add_argument(o.flag, action=argparse.BooleanOptionalAction, default=None,
                                           help=f"{text} (default: {o.default})")
        else:
            metavar = "|".join(o.choices + o.ff_choices + o.rnn_choices) or o.name.upper()
            sections[o.group].add_argument(o.flag, type=o.type, default=None, metavar=metavar,
                                           help=f"{text} (default: {o.default!r})")


def given(args: argparse.Namespace) -> dict:
    """The options the user set: TOML file < flags."""
    values = load_toml(Path(args.config)) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k in BY_NAME and v is not None})
    return values


def from_args(args: argparse.Namespace) -> Config:
    """Defaults < TOML file < flags, validated."""
    return Config(**given(args)).validate()


def from_saved(saved: dict, strict: bool = False) -> Config:
    """The options of a saved run (a checkpoint's Config, or config.json): those it predates at what runs did
    before them, so a resumed or evaluated old run goes on as it was trained; ones it did not save at defaults.

    Strict (config.json): every option its model saves must be there, but those it predates (KeyError, as
    for any torn config)."""
    before = {o.name: o.before for o in OPTIONS if o.before is not None}
    model = saved.get("model", before["model"])
    lacks = [o.name for o in OPTIONS if strict and (o.wire or o.saved) and o.model in (BOTH, model)
             and o.name not in saved and o.name not in before]
    if lacks:
        raise KeyError(lacks[0])
    return Config(**{**before, **{k: _coerced(BY_NAME[k], v) for k, v in saved.items() if k in BY_NAME}})


def checked(saved: dict, where: str, complete: bool = False) -> Config:
    """A saved run's options (from_saved's), each through the flags' own checks: type, choices, range; with
    `complete` (a progress's config, which holds every option) the checks between options too. A checkpoint's
    config holds only some (not --batch-size, which --micro-batches must divide). ConfigError names `where`."""
    values = {name: typed(BY_NAME[name], value, f"{where}: {name}") for name, value in saved.items() if name in BY_NAME}
    try:
        for name, value in values.items():
            _check(BY_NAME[name], value, values.get("model", "ff"))
        cfg = from_saved(saved, strict=True)
        return cfg.validate() if complete else cfg
    except KeyError as exc:
        raise ConfigError(f"{where} lacks the option {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def resumed(saved: dict, args: argparse.Namespace, run_dir: str) -> Config:
    """The saved run's options; given ones must agree, but for resumable ones and a larger --epochs."""
    values = {**asdict(from_saved(saved)), "out": run_dir}
    for name, value in given(args).items():
        if name == "overwrite" and value:
            raise ConfigError(f"--overwrite: a resumed run continues the run in {run_dir}, it does not replace it")
        if name == "overwrite":
            continue
        if name == "out" and Path(value).resolve() != Path(run_dir).resolve():
            raise ConfigError(f"--out {value}: a resumed run stays in its directory {run_dir}")
        if BY_NAME[name].resumable:
            if name == "epochs" and value < values["epochs"]:
                raise ConfigError(f"--epochs {value}: the run was set to {values['epochs']}; "
                                  "resuming can only add epochs")
            values[name] = value
        elif name != "out" and value != values[name]:
            may = ", ".join(o.flag for o in OPTIONS if o.resumable)
            raise ConfigError(f"--{name.replace('_', '-')} {value!r}: the run in {run_dir} has {values[name]!r}, "
                              f"and a resumed run keeps its options (but {may})")
    return Config(**values).validate()


def load_toml(path: Path) -> dict:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {path}") from None
    except OSError as exc:   # a directory, unreadable, ...
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    out = {}
    for key, value in raw.items():
        option = BY_NAME.get(key.replace("-", "_"))
        if option is None:
            raise ConfigError(f"--config {path}: unknown option {key!r}")
        if option.type is str and isinstance(value, list):  # hidden = [256, 256]
            value = ",".join(map(str, value))
        out[option.name] = typed(option, value, f"--config {path}: {key}")
    return out


def typed(option: Option, value, where: str):
    """value as the option's type (`_coerced`); ConfigError naming `where` if it is not."""
    value = _coerced(option, value)
    if isinstance(value, bool) and option.type is not bool or not isinstance(value, option.type):
        raise ConfigError(f"{where} should be {option.type.__name__}, got {value!r}")
    return value


def _coerced(option: Option, value):
    """An int where a float goes as that float; an int where text goes as its text (TOML's `pool = 2`, and a
    --pool saved before it took a list per conv stage); anything else as it is."""
    if type(value) is int and option.type in (float, str):
        return option.type(value)
    return value
