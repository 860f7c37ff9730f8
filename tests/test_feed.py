"""--feed stage: stage 1 reads the training set itself, the coordinator names each batch's examples.

The same batches in the same order as the coordinator would send: the runs end bit for bit alike,
resumed or with stage 1 killed and replaced. The autouse no_orphans fixture (conftest.py) asserts
that no worker is left behind.
"""
from dataclasses import replace

import numpy as np
import pytest
from resumable import assert_same_checkpoint, killed_and_replaced, stopped_by_sigterm, summary
from timing import FAST, wait_for

from coordinator import plans
from coordinator.cli import main
from coordinator.config import Config
from coordinator.plans.feedforward import FEED_AHEAD
from protocol import Kind, Message
from workers.data.shard import SPEC, Shard

# Small runs on MNIST with its validation split held out and centred: every piece of the training set's making.
JOB = ["--hidden", "16,16", "--train-subset", "1024", "--eval-every", "4", "--seed", "3", "--lr", "3e-3",
       "--log-every", "1", "--checkpoint-every", "0", "--checkpoint-seconds", "0"]
# Modes whose arithmetic does not depend on timing, so that two runs of them can be compared bit for bit.
EXACT = [pytest.param(["--mode", "backprop"], id="backprop"),
         pytest.param(["--mode", "pipedream"], id="pipedream", marks=pytest.mark.slow),
         pytest.param(["--mode", "gpipe", "--micro-batches", "2"], id="gpipe", marks=pytest.mark.slow)]


def run(out, *argv) -> dict:
    assert main(["run", *argv, "--out", str(out), *FAST]) == 0
    return summary(out)


def assert_same_run(a, b) -> None:
    assert_same_checkpoint(a, b)
    want, got = summary(a), summary(b)
    assert got["history"] == want["history"] and got["steps"] == want["steps"]
    assert [v["val_accuracy"] for v in got["validation"]] == [v["val_accuracy"] for v in want["validation"]]


@pytest.mark.parametrize("mode", EXACT)
def test_a_stage_fed_run_ends_as_the_coordinator_fed_one_bit_for_bit(mode, mnist, tmp_path):
    job = ["--data", str(mnist), *JOB, *mode, "--epochs", "2"]
    fed = run(tmp_path / "coordinator", *job)
    read = run(tmp_path / "stage", *job, "--feed", "stage")
    assert read["feed"] == "stage" and fed["feed"] == "coordinator" and read["steps"] == 2 * 8
    assert_same_run(tmp_path / "coordinator", tmp_path / "stage")
    assert not summary(tmp_path / "stage")["workers"]["1"]["dropped"]   # stage 1 took every batch it was named


def test_the_generated_task_is_fed_by_stage_one_alike(tmp_path):
    job = [*JOB, "--mode", "backprop", "--epochs", "2"]
    run(tmp_path / "coordinator", *job)
    run(tmp_path / "stage", *job, "--feed", "stage")
    assert_same_run(tmp_path / "coordinator", tmp_path / "stage")


def test_sigterm_then_resume_keeps_stage_ones_place_in_the_data(mnist, tmp_path):
    job = ["--data", str(mnist), *JOB, "--mode", "backprop", "--epochs", "5", "--feed", "stage"]
    run(tmp_path / "whole", *job)
    part = tmp_path / "part"
    _, stopped = stopped_by_sigterm(part, *job, after=12)
    assert 12 <= stopped["step"] < 5 * 8
    assert main(["run", "--resume", str(part), *FAST]) == 0
    assert_same_run(tmp_path / "whole", part)
    assert summary(part)["resumes"] == 1


@pytest.mark.slow   # two runs of 120 steps
def test_stage_one_killed_and_replaced_reads_on_from_the_checkpoints_place(mnist, tmp_path):
    job = ["--data", str(mnist), *JOB, "--mode", "backprop", "--epochs", "15", "--checkpoint-every", "7",
           "--feed", "stage"]
    assert_same_run(*killed_and_replaced(tmp_path, job, stage=1, at=30))


@pytest.mark.parametrize("argv, says", [
    (["--model", "rnn", "--task", "copy", "--mode", "dni", "--boxes", "8", "--steps-per-box", "3", "--feed", "stage"],
     "--feed stage: stage 1 of a feed-forward network reads the training set itself"),
    (["--mode", "cdni", "--synthetic-inputs", "--feed", "stage"],
     "--synthetic-inputs: the coordinator feeds every stage the network input: give --feed coordinator"),
])
def test_bad_feed_options_are_one_line_naming_the_option(argv, says, capsys, tmp_path):
    assert main(["run", *argv, "--out", str(tmp_path / "r"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dni: error:") and says in err and err.count("\n") == 1, err


def test_stage_one_takes_only_batches_of_its_own_shard():
    spec = dict(data="", classes=[], seed=1, held_out=0, first=300, centre=True)
    shard = Shard(spec)
    assert wait_for(shard.loaded) and shard.error is None and len(shard.x) == 300

    def forward(**arrays):
        return Message(Kind.FORWARD, "coordinator", 0, {}, arrays)

    ok = forward(index=np.array([299, 0, 5]))
    assert shard.fault(ok) is None
    taken = shard.take(ok)
    assert np.array_equal(taken.arrays["x"], shard.x[[299, 0, 5]]) and np.array_equal(taken.arrays["y"],
                                                                                         shard.y[[299, 0, 5]])
    assert shard.fault(forward(index=np.array([300]))) == "example indices outside the training set"
    assert shard.fault(forward(index=np.array([-1]))) == "example indices outside the training set"
    assert shard.fault(forward(index=np.array([], np.int64))) == "example indices outside the training set"
    assert shard.fault(forward(x=np.zeros((1, 32), np.float32), y=np.zeros(1, np.int64))) \
        == "arrays not those of a batch by index"
    with pytest.raises(ValueError, match="--feed stage: the assignment names no training set"):
        Shard({k: spec[k] for k in SPEC[:-1]})
    unreadable = Shard({**spec, "data": "/nonexistent"})
    assert wait_for(unreadable.loaded) and unreadable.error.startswith(
        "--feed stage: stage 1 cannot read its training set: /nonexistent: missing train-images-idx3-ubyte[.gz]")


@pytest.mark.parametrize("options, window", [
    ({"mode": "cdni", "credit": "taken"}, 2 + FEED_AHEAD),   # stage 1 holds its link's credit
    ({"mode": "pipedream"}, 3 + FEED_AHEAD),                 # ... its 1F1B limit (the stages, here 3)
    ({"mode": "backprop", "credit": "link"}, 2 + FEED_AHEAD),
    ({"mode": "cdni"}, 2),                                   # the coordinator's credit is all there is
])
def test_the_coordinator_names_batches_ahead_only_where_stage_one_holds_its_own_limit(options, window):
    cfg = Config(hidden="8,8", train_subset=256, feed="stage", **options).validate()
    assert plans.for_config(cfg).window() == window
    assert plans.for_config(replace(cfg, feed="coordinator")).window() == (window - FEED_AHEAD if window > 2 else 2)


@pytest.mark.parametrize("row", [["--credit", "taken"], ["--credit", "link", "--bp-lambda", "0.5"]])
def test_stage_one_holds_the_batches_named_ahead_under_link_credit_and_drops_none(row, tmp_path):
    done = run(tmp_path / "r", *JOB, "--mode", "cdni", "--window", "1", *row, "--epochs", "2", "--feed", "stage")
    assert done["steps"] == 16 and all(not w["dropped"] for w in done["workers"].values())
