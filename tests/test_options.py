"""The option table: every option goes flag -> Config -> WireConfig -> worker; --help, checks, TOML and resume."""
import argparse
from dataclasses import asdict

import pytest
from conftest import MNIST

from coordinator import plans
from coordinator.cli import main
from coordinator.config import Config, ConfigError, add_arguments, checked, from_args, from_saved, resumed
from protocol import Kind, Message, ProtocolError, decode, encode
from protocol.options import BOTH, GROUPS, OPTIONS, RNN, Option
from protocol.wireconfig import WireConfig

# Small valid runs of each model that every option's other value still fits (the feed-forward one on the
# generated task, with a Copy task that --model rnn can switch to).
BASE = {
    "ff": ["--train-subset", "256", "--hidden", "8", "--mode", "dni", "--task", "copy", "--copy-length", "1"],
    "rnn": ["--model", "rnn", "--data", str(MNIST), "--classes", "0,1", "--task", "copy", "--copy-length", "2",
            "--mode", "dni", "--boxes", "2", "--steps-per-box", "4"],
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def as_flags(option: Option, value) -> list[str]:
    if option.type is bool:
        return [option.flag if value else f"--no-{option.flag[2:]}"]
    return [option.flag, str(value)]


# Free text: another value each such option takes (the resume test needs one that differs from the saved run's).
OTHER_TEXT = {"data": "/elsewhere/mnist", "classes": "0,1", "hidden": "16,8", "conv": "8", "pool": "1",
              "out": "runs/other"}


def candidates(option: Option, now):
    """Values other than `now` the option takes, best first (free text: `now` itself, then another)."""
    if option.type is bool:
        return [not now]
    if option.choices:
        return [c for c in option.choices + option.rnn_choices if c != now]
    if option.type is str:
        return [now, OTHER_TEXT[option.name]]
    if option.high is not None:
        return [(option.low + option.high) / 2]
    return [now + 1] if option.type is int else [now * 2 or 1.0]


def worker_side(plan) -> WireConfig:
    """The config a worker parses from an ASSIGN message, as workers/roles do it."""
    meta = {"role": plan.roles()[0], "stage": 1, "config": plan.wire.to_meta(), "heartbeat": 1.0, "neighbours": {}}
    frames = encode(Message(Kind.ASSIGN, "coordinator", 0, meta))
    return WireConfig.from_meta(decode([bytes(memoryview(f)) for f in frames]).meta["config"])


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_every_option_goes_from_its_flag_to_the_worker(option):
    base = BASE["rnn" if option.model == RNN else "ff"]
    now = getattr(from_args(parse(base)), option.name)
    for value in candidates(option, now):
        try:
            cfg = from_args(parse(base + as_flags(option, value)))
            plan = plans.for_config(cfg)
        except ConfigError:
            continue   # this choice does not fit the base run (e.g. --mode cdni on the copy task): the next
        break
    else:
        pytest.fail(f"no value of {option.flag} fits")
    assert getattr(cfg, option.name) == value
    worker = worker_side(plan)
    if option.wire:
        assert getattr(worker, option.name) == value and plan.checkpoint_config()[option.name] == value
    else:
        assert not hasattr(worker, option.name)
    if option.saved:
        assert plan.checkpoint_config()[option.name] == value
    if option.summary:
        assert plan.summary_fields()[option.name] == value


def test_help_shows_each_option_in_its_group():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = parser.format_help()
    starts = [text.index(f"\n{group}:\n") for group in GROUPS]
    assert starts == sorted(starts)
    sections = dict(zip(GROUPS, (text[a:b] for a, b in zip(starts, starts[1:] + [len(text)]))))
    for o in OPTIONS:
        assert f"  {o.flag}" in sections[o.group], o.name


def bad_values(option: Option) -> list:
    values = ["nope"] if option.choices else []
    if option.positive:
        values.append(0)
    if option.low is not None:
        values.append(option.low - 1)
    if option.high is not None:
        values.append(option.high * 2)
    return values


@pytest.mark.parametrize("option, value", [(o, v) for o in OPTIONS for v in bad_values(o)],
                         ids=lambda x: x.name if isinstance(x, Option) else str(x))
def test_a_bad_choice_or_out_of_range_value_is_a_one_line_error_naming_the_flag(option, value, capsys, tmp_path):
    assert main(["run", "--out", str(tmp_path), option.flag, str(value)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dni: error: {option.flag}") and "\n" not in err


def test_truncated_is_a_mode_of_the_recurrent_model_only():
    with pytest.raises(ConfigError, match="--mode: 'truncated' is not one of dni, cdni, backprop, gpipe, pipedream$"):
        Config(mode="truncated").validate()
    assert Config(model="rnn", task="copy", copy_length=1, mode="truncated").validate().mode == "truncated"


def test_toml_then_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('hidden = [16, 8]\nlr = 1\nno-such = 3\n')
    with pytest.raises(ConfigError, match="unknown option 'no-such'"):
        from_args(parse(["--config", str(toml)]))
    toml.write_text('hidden = [16, 8]\nlr = 1\ncheckpoint-seconds = 5\nprogress = false\n')
    cfg = from_args(parse(["--config", str(toml), "--checkpoint-seconds", "7"]))
    assert (cfg.hidden, cfg.lr, cfg.checkpoint_seconds, cfg.progress) == ("16,8", 1.0, 7.0, False)
    assert type(cfg.lr) is float
    toml.write_text('epochs = "five"\n')
    with pytest.raises(ConfigError, match="epochs should be int"):
        from_args(parse(["--config", str(toml)]))


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.name not in ("out", "overwrite")], ids=lambda o: o.name)
def test_resume_refuses_a_changed_option_but_a_resumable_one(option):
    saved = asdict(Config(epochs=2))
    value = next(v for v in candidates(option, saved[option.name]) if v != saved[option.name])
    args = parse(as_flags(option, value))
    if option.resumable:
        assert getattr(resumed(saved, args, "runs/old"), option.name) == value
    else:
        with pytest.raises(ConfigError, match=f"^{option.flag} .*keeps its options"):
            resumed(saved, args, "runs/old")


def test_a_run_saved_before_an_option_existed_resumes_as_it_was_trained():
    """BP(lambda), between stages and between boxes, and centring changed the defaults; a saved config without
    them keeps the old behaviour."""
    older = {o.name: o.before for o in OPTIONS if o.before is not None}
    saved = {k: v for k, v in asdict(Config(epochs=2)).items() if k not in older}
    cfg = resumed(saved, parse([]), "runs/old")
    assert {name: getattr(cfg, name) for name in older} == older
    assert (Config().bp_lambda, Config().box_lambda, Config().centre) == (1.0, 1.0, True)


def test_a_wire_config_missing_a_field_takes_its_value_from_before_the_option_or_is_refused():
    wire = plans.for_config(from_args(parse(BASE["ff"]))).wire.to_meta()
    for o in OPTIONS:
        if o.wire and o.model != RNN:
            meta = {k: v for k, v in wire.items() if k != o.name}
            if o.before is not None:
                assert getattr(WireConfig.from_meta(meta), o.name) == o.before
            elif o.model == BOTH:
                with pytest.raises(ProtocolError, match=f"lacks '{o.name}'"):
                    WireConfig.from_meta(meta)


def test_a_config_json_saved_before_the_newer_options_reads_as_it_was_trained():
    old = {"sizes": [784, 8, 10], "mode": "cdni", "optimizer": "adam", "lr": 0.001, "schedule": "cosine",
           "total_steps": 10, "synth_lr": 0.3, "synth_hidden": 0, "seed": 0, "log_every": 50, "cache": 24,
           "data": "", "classes": "", "eval_batch": 1000, "dataset": "generated-0"}
    wire = WireConfig.from_meta(old)
    assert (wire.model, wire.bp_lambda, wire.window, wire.credit) == ("ff", 0.0, 1, "coordinator")
    cfg = from_saved(old)
    assert (cfg.model, cfg.centre, cfg.bp_lambda, cfg.mode, cfg.eval_batch) == ("ff", False, 0.0, "cdni", 1000)


def test_a_pool_saved_or_written_as_one_integer_reads_as_its_text(tmp_path):
    """--pool took one integer before it took a list per conv stage: runs saved then, and TOML's `pool = 2`."""
    wire = plans.for_config(from_args(parse(BASE["ff"]))).wire.to_meta()
    assert WireConfig.from_meta({**wire, "pool": 2}).pool == "2"
    assert checked({**asdict(Config()), "pool": 2}, "its config").pool == "2"
    toml = tmp_path / "run.toml"
    for text, pools in (("pool = 2", [2, 2]), ("pool = [1, 2]", [1, 2])):
        toml.write_text(f'conv = "8,8"\n{text}\n')
        assert from_args(parse(["--config", str(toml)])).conv_pools() == pools
