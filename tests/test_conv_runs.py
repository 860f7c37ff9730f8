"""Conv stages over real processes on a subset of MNIST: transparency, learning, every mode, checkpoints, bad input."""
import json
import os
import signal

import numpy as np
import pytest
from conftest import MNIST
from resumable import assert_same_checkpoint, stage_pid, start, steps_logged, stopped_by_sigterm, summary
from timing import FAST, wait_until

from coordinator import checkpoint, plans
from coordinator.cli import main
from coordinator.config import from_saved
from coordinator.data import batches
from protocol.window import in_flight
from protocol.wireconfig import WireConfig
from workers.numerics.reference import build_network, step

# A small conv net: two conv stages of small maps, a dense stage, the head.
NET = ["--data", str(MNIST), "--conv", "4,8", "--kernel", "3", "--hidden", "16", "--seed", "3"]
SMALL = [*NET, *FAST]
# Locked backprop: its arithmetic does not depend on timing, so a disturbed run can end bit-exact.
JOB = [*NET, "--mode", "backprop", "--train-subset", "1280", "--epochs", "3", "--log-every", "1",
       "--checkpoint-every", "5", "--checkpoint-seconds", "0"]


@pytest.mark.slow   # reads the whole of MNIST
@pytest.mark.parametrize("pool", ["2", "1,2"])
def test_backprop_over_processes_with_conv_stages_equals_the_single_process_reference(tmp_path, pool):
    """Transparency, bit for bit: the conv stages' processes do the reference's arithmetic (with a pooling for
    every stage, and one per stage)."""
    assert main(["run", *SMALL, "--pool", pool, "--mode", "backprop", "--train-subset", "384", "--epochs", "2",
                 "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["pool"] == pool
    saved, states = checkpoint.load(tmp_path)
    task = plans.for_checkpoint(saved).load_task(from_saved(saved, strict=True))
    net = build_network(WireConfig.from_meta(saved))
    rng, b = np.random.default_rng(3), 0
    for _ in range(2):
        for x, y in batches(task.dataset.x_train, task.dataset.y_train, 128, rng):
            step(net, b, x, y)
            b += 1
    assert saved["step"] == b == 6
    for stage in net:
        for name, want in stage.state().items():
            np.testing.assert_array_equal(states[stage.index][name], want, err_msg=f"stage {stage.index} {name}")


@pytest.mark.slow
def test_a_short_conv_run_learns_and_its_checkpoint_evaluates_to_its_accuracy(tmp_path, capsys):
    assert main(["run", *SMALL, "--mode", "cdni", "--train-subset", "5120", "--epochs", "2", "--log-every", "5",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stages"] == 4 and summary["conv"] == "4,8"
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
              if r["stage"] == 4 and "loss" in r]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    assert summary["test_accuracy"] > 0.2   # chance is 0.1; backprop reaches 0.4 in these 80 batches
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    assert f"test accuracy {summary['test_accuracy']:.4f}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dni", "backprop", "gpipe", "pipedream", "cdni --synthetic-inputs --p-update 0.5"])
def test_every_mode_trains_conv_stages_and_evaluates_their_checkpoint(tmp_path, capsys, mode):
    assert main(["run", *SMALL, "--mode", *mode.split(), "--train-subset", "512", "--epochs", "1",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stages"] == 4 and summary["mode"] == mode.split()[0]
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    assert f"test accuracy {summary['test_accuracy']:.4f}" in capsys.readouterr().out


@pytest.mark.slow   # reads the whole of MNIST
@pytest.mark.parametrize("argv, words", [
    (["--kernel", "9"], "--kernel 9 is larger than conv stage 3's 7x7 input map"),
    (["--pool", "4", "--kernel", "1"], "--pool 4 leaves conv stage 3 a 0x0 map (its input is 1x1)"),
    (["--pool", "2,2,8"], "--pool 2,2,8 leaves conv stage 3 a 0x0 map (its input is 7x7)"),
])
def test_conv_shapes_that_do_not_fit_are_one_line_errors(argv, words, capsys, tmp_path):
    assert main(["run", "--data", str(MNIST), "--conv", "4,8,8", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error:") and words in err and "\n" not in err


@pytest.mark.parametrize("conv", ["0", "8,x", "-4"])
def test_a_malformed_conv_list_is_a_one_line_error(conv, capsys, tmp_path):
    assert main(["run", "--data", str(MNIST), "--conv", conv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error: --conv") and "\n" not in err


@pytest.mark.parametrize("pool, words", [("2,2,2", "--pool 2,2,2: 3 entries for --conv's 2 stages"),
                                         ("2,0", "--pool: expected integers >= 1"), ("", "--pool: expected one")])
def test_a_pool_list_that_does_not_fit_conv_is_a_one_line_error(pool, words, capsys, tmp_path):
    assert main(["run", "--data", str(MNIST), "--conv", "4,8", "--pool", pool, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dni: error: {words}") and "\n" not in err


def test_conv_under_the_recurrent_model_is_a_one_line_error(capsys, tmp_path):
    assert main(["run", "--model", "rnn", "--data", str(MNIST), "--conv", "8", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "dni: error: --conv: conv stages are feed-forward only (--model ff)"


def test_conv_without_images_is_a_one_line_error(capsys, tmp_path):
    assert main(["run", "--conv", "8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--conv: generated-0 has no image shape" in err and "\n" not in err


@pytest.mark.slow   # reads the whole of MNIST
@pytest.mark.parametrize("change, words", [({"conv": "", "image": []}, "differ (conv)"),
                                           ({"conv": "4,8,8"}, "do not fit its 3 conv stages")],
                         ids=["as dense", "with a conv stage more"])
def test_a_conv_checkpoint_evaluated_as_another_network_is_a_one_line_error(tmp_path, capsys, change, words):
    assert main(["run", *SMALL, "--mode", "backprop", "--train-subset", "256", "--epochs", "1",
                 "--out", str(tmp_path)]) == 0
    saved = checkpoint.latest(tmp_path)
    for _ in range(2):   # the newest checkpoint and the previous one
        checkpoint.save(tmp_path, {**saved.config, **change}, saved.states, saved.progress)
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error:") and words in err and "\n" not in err


@pytest.mark.slow
def test_a_conv_run_stopped_and_resumed_ends_with_the_undisturbed_runs_weights(tmp_path):
    assert main(["run", *JOB, "--out", str(tmp_path / "undisturbed"), *FAST]) == 0
    stopped_by_sigterm(tmp_path / "run", *JOB, after=12)
    assert main(["run", "--resume", str(tmp_path / "run"), *FAST]) == 0
    assert_same_checkpoint(tmp_path / "undisturbed", tmp_path / "run")


@pytest.mark.slow
def test_a_conv_stage_killed_mid_run_is_restarted_and_the_run_ends_bit_exact(tmp_path):
    assert main(["run", *JOB, "--out", str(tmp_path / "undisturbed"), *FAST]) == 0
    proc = start(tmp_path / "run", *JOB)
    wait_until(lambda: steps_logged(tmp_path / "run") >= 12, 60, "step 12", proc)
    os.kill(stage_pid(2), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert summary(tmp_path / "run")["restarts"] == 1
    assert_same_checkpoint(tmp_path / "undisturbed", tmp_path / "run")


@pytest.mark.slow
def test_bench_latency_with_conv_stages_reports_each_stages_peak_memory(tmp_path, capsys):
    out = tmp_path / "latency.json"
    assert main(["bench", "latency", "--conv", "4", "--width", "16", "--data", str(MNIST), "--batch", "16",
                 "--steps", "12", "--warmup", "2", "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["params"]["conv"] == "4" and [r["depth"] for r in result["runs"]] == [3, 3]
    for run in result["runs"]:
        assert all(s["peak_rss_mb"] > 0 for s in run["stages"])
    assert result["throughput"]["depth"] == 3 and 0 < result["throughput"]["fraction_of_ideal"]
    assert "peak RSS MB" in capsys.readouterr().out
    # Each stage's bound: 4 x 4 weights + 16 biases and M's 3 x 3 x 4 x 4 + 4 (floats), 2 batches of 16 of its
    # input rows (28 x 28), and of each batch it held at once its output (14 x 14 x 4), M's prediction (floats)
    # and the pooling's argmax (bytes); beside what its worker grew by.
    first = result["memory"][0]
    weights = (25 * 4 + 4 + 36 * 4 + 4) * 4 / 2**20
    assert first["conv"] and first["weights_mb"] == pytest.approx(weights)
    assert 2 <= first["held"] <= in_flight(2)
    assert first["bound_mb"] == pytest.approx(4 * weights + 16 * (2 * 784 * 4 + first["held"] * 784 * 9) / 2**20)
    for row in result["memory"]:
        assert 0 < row["start_rss_mb"] < row["peak_rss_mb"]
        assert row["growth_mb"] == pytest.approx(row["peak_rss_mb"] - row["start_rss_mb"])
    assert [t for t in result["targets"] if t["name"].startswith("conv stages' peak RSS")]


def test_bench_latency_conv_without_images_is_a_one_line_error(capsys):
    assert main(["bench", "latency", "--conv", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--conv: conv stages need images" in err and "\n" not in err


@pytest.mark.slow
def test_a_conv_run_with_maps_wider_than_a_dense_stage_may_be_evaluates(tmp_path, capsys):
    """Without pooling a conv stage's map (28x28x16 = 12,544 values) is wider than a dense stage may be: the
    checkpoint's checks bound the dense stages' weights, not the maps."""
    assert main(["run", *SMALL, "--conv", "16", "--pool", "1", "--mode", "backprop", "--train-subset", "128",
                 "--epochs", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    assert "test accuracy" in capsys.readouterr().out
