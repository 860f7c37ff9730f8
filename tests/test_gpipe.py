"""--mode gpipe: the micro-batch split, exact backprop over processes, restarts, resumes and bad input."""

import numpy as np
import pytest
from resumable import (
    assert_same_checkpoint,
    killed_and_replaced,
    records,
    stopped_by_sigterm,
    summary,
)
from timing import FAST

from coordinator import checkpoint
from coordinator.cli import main
from coordinator.config import Config
from coordinator.data import batches, generated_task
from protocol import window
from protocol.wireconfig import WireConfig
from workers.numerics import microbatch, reference
from workers.numerics.gpipe import Accumulator, GPipeHead, GPipeStage, train_batch

# 1302 examples: ten batches of 128 and a last one of 22, which 4 micro-batches split unevenly (6, 6, 5, 5).
JOB = ["--mode", "gpipe", "--micro-batches", "4", "--hidden", "32,16", "--train-subset", "1302", "--seed", "3"]
STEPS_PER_EPOCH = 11


def test_a_batch_splits_into_micro_batches_in_order_the_larger_first():
    assert microbatch.split(8, 4) == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    assert microbatch.split(22, 4) == [slice(0, 6), slice(6, 12), slice(12, 17), slice(17, 22)]
    assert microbatch.split(5, 1) == [slice(0, 5)]
    assert microbatch.split(3, 3) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    with pytest.raises(ValueError, match="2 examples cannot make 3 micro-batches"):
        microbatch.split(2, 3)


def test_micro_batch_ids_are_consecutive_over_the_run_and_locate_their_batch():
    assert list(microbatch.ids(0, 4)) == [0, 1, 2, 3]
    assert list(microbatch.ids(5, 3)) == [15, 16, 17]
    assert [microbatch.locate(b, 3) for b in (15, 16, 17, 18)] == [(5, 0), (5, 1), (5, 2), (6, 0)]


def test_gradients_add_up_in_micro_batch_order_only():
    acc = Accumulator(2)
    assert not acc.add(0, {"W": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match="micro-batch 0 out of order: 1 comes next"):
        acc.add(0, {"W": np.ones(2, np.float32)})
    assert acc.add(1, {"W": np.full(2, 2, np.float32)})
    assert np.array_equal(acc.take()["W"], [3, 3]) and acc.count == 0 and acc.sum is None


def wire_for(**options) -> WireConfig:
    """The wire config of a run of JOB's network (32 generated features, 10 classes) with these options."""
    cfg = Config(hidden="32,16", **options)
    return WireConfig.from_meta({**cfg.listed("wire"), "sizes": [32, 32, 16, 10], "total_steps": 11,
                                 "cache": window.in_flight(cfg.micro_batches), "credit": cfg.credit})


def gpipe_network(wire: WireConfig) -> list:
    *hidden, head = reference.build_network(wire)
    return [GPipeStage(s, wire.micro_batches) for s in hidden] + [GPipeHead(head, wire.micro_batches)]


def numerics(stage):
    return stage.stage if isinstance(stage, GPipeStage) else stage.head


def train_reference(net: list, subset: int, epochs: int, train) -> int:
    """Train a single-process network on the run's batches, in the run's order; returns the steps."""
    data = generated_task(seed=3).first(subset).centred()   # what the run trains on, by default
    rng, step = np.random.default_rng(3), 0
    for _ in range(epochs):
        for x, y in batches(data.x_train, data.y_train, 128, rng):
            train(net, step, x, y)
            step += 1
    return step


def test_one_micro_batch_is_locked_backprop_bit_for_bit_and_more_are_the_same_gradient():
    one = gpipe_network(wire_for(mode="gpipe", micro_batches=1))
    backprop = reference.build_network(wire_for(mode="backprop"))
    four = gpipe_network(wire_for(mode="gpipe", micro_batches=4))
    for net, train in ((one, train_batch), (backprop, reference.step), (four, train_batch)):
        assert train_reference(net, 1302, 1, train) == STEPS_PER_EPOCH
    for a, b, c in zip(one, backprop, four):
        want = b.state()
        for name, value in numerics(a).state().items():
            assert np.array_equal(value, want[name]), name
        # Four micro-batches add up the same mean gradient, in another float32 order.
        for name, value in numerics(c).state().items():
            np.testing.assert_allclose(value, want[name], rtol=1e-3, atol=1e-5, err_msg=name)


def test_gpipe_over_processes_matches_the_single_process_reference_bit_for_bit(tmp_path):
    assert main(["run", *JOB, "--epochs", "2", "--out", str(tmp_path), "--log-every", "5", *FAST]) == 0
    saved, states = checkpoint.load(tmp_path)
    net = gpipe_network(WireConfig.from_meta(saved))
    steps = train_reference(net, 1302, 2, train_batch)
    assert saved["step"] == steps == 2 * STEPS_PER_EPOCH
    for k, s in enumerate(net, start=1):
        for name, want in numerics(s).state().items():
            assert np.array_equal(states[k][name], want), (k, name)
    done = summary(tmp_path)
    assert done["mode"] == "gpipe" and done["micro_batches"] == 4 and done["steps"] == steps
    assert done["samples_per_second"] > 0
    # One record per batch and stage, its update latency and bubble; the head's with the batch's loss.
    for k in (1, 2, 3):
        recs = [r for r in records(tmp_path) if r["stage"] == k]
        assert sorted(r["step"] for r in recs) == list(range(steps)), k
        assert all(r["latency_ms"] > 0 and 0 <= r["bubble"] < 1 for r in recs), k
    assert all(r["loss"] > 0 for r in records(tmp_path) if r["stage"] == 3)
    assert set(done["update_latency_ms"]) == set(done["bubble"]) == {"1", "2", "3"}
    assert all(0 <= b < 1 for b in done["bubble"].values())


@pytest.mark.parametrize("argv, words", [
    (["--micro-batches", "3"], "--micro-batches 3 does not divide --batch-size 128"),
    (["--micro-batches", "256"], "--micro-batches 256 is more than --batch-size 128"),
    (["--micro-batches", "0"], "--micro-batches must be at least 1"),
    (["--model", "rnn"], "--mode gpipe is feed-forward only: it needs --model ff, not --model rnn"),
    (["--train-subset", "1281"], "--micro-batches 4: each epoch's last batch has only 1 examples"),
])
def test_bad_gpipe_options_give_one_line_errors_naming_the_option(argv, words, capsys, tmp_path):
    assert main(["run", "--out", str(tmp_path), "--mode", "gpipe", "--micro-batches", "4", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error:") and words in err and "\n" not in err, err


def test_resume_into_another_mode_is_refused_in_one_line(tmp_path, capsys):
    assert main(["run", *JOB, "--epochs", "1", "--out", str(tmp_path), *FAST]) == 0
    capsys.readouterr()
    for argv, words in ((["--mode", "backprop"], "--mode 'backprop': the run in"),
                        (["--micro-batches", "2"], "--micro-batches 2: the run in")):
        assert main(["run", "--resume", str(tmp_path), "--epochs", "2", *argv, *FAST]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dni: error:") and words in err and "\n" not in err, err


def test_sigterm_then_resume_ends_with_the_uninterrupted_runs_weights(tmp_path):
    job = [*JOB, "--epochs", "6", "--log-every", "1", "--checkpoint-every", "0", "--checkpoint-seconds", "0"]
    assert main(["run", *job, "--out", str(tmp_path / "whole"), *FAST]) == 0
    part = tmp_path / "part"
    _, stopped = stopped_by_sigterm(part, *job)
    assert 20 <= stopped["step"] < 6 * STEPS_PER_EPOCH
    assert main(["run", "--resume", str(part), *FAST]) == 0
    assert_same_checkpoint(tmp_path / "whole", part)
    assert summary(part)["history"] == summary(tmp_path / "whole")["history"]
    # metrics.jsonl carries on: every stage's record of each batch once, none missing.
    for stage in (1, 2, 3):
        assert sorted(r["step"] for r in records(part) if r["stage"] == stage) == list(range(6 * STEPS_PER_EPOCH))


@pytest.mark.slow   # two runs of 330 steps
def test_a_killed_worker_is_replaced_and_the_run_ends_as_the_undisturbed_one_bit_for_bit(tmp_path):
    job = [*JOB, "--epochs", "30", "--log-every", "1", "--checkpoint-every", "7"]
    assert_same_checkpoint(*killed_and_replaced(tmp_path, job, stage=2, at=40))
