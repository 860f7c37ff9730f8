"""Conv stages over real processes on a subset of MNIST: transparency, learning, every mode, checkpoints, bad input."""
import json

import numpy as np
import pytest
from conftest import MNIST
from timing import FAST

from coordinator import checkpoint, plans
from coordinator.cli import main
from coordinator.config import from_saved
from coordinator.data import batches
from protocol.wireconfig import WireConfig
from workers.numerics.reference import build_network, step

# A small conv net: two conv stages of small maps, a dense stage, the head.
SMALL = ["--data", str(MNIST), "--conv", "4,8", "--kernel", "3", "--hidden", "16", "--seed", "3", *FAST]


def test_backprop_over_processes_with_conv_stages_equals_the_single_process_reference(tmp_path):
    """Transparency, bit for bit: the conv stages' processes do the reference's arithmetic."""
    assert main(["run", *SMALL, "--mode", "backprop", "--train-subset", "384", "--epochs", "2",
                 "--out", str(tmp_path)]) == 0
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
@pytest.mark.parametrize("mode", ["dni", "backprop", "gpipe", "pipedream"])
def test_every_mode_trains_conv_stages_and_evaluates_their_checkpoint(tmp_path, capsys, mode):
    assert main(["run", *SMALL, "--mode", mode, "--train-subset", "512", "--epochs", "1",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stages"] == 4 and summary["mode"] == mode
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    assert f"test accuracy {summary['test_accuracy']:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--kernel", "9"], "--kernel 9 is larger than conv stage 3's 7x7 input map"),
    (["--pool", "4", "--kernel", "1"], "--pool 4 leaves conv stage 3 a 0x0 map (its input is 1x1)"),
])
def test_conv_shapes_that_do_not_fit_are_one_line_errors(argv, words, capsys, tmp_path):
    assert main(["run", "--data", str(MNIST), "--conv", "4,8,8", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error:") and words in err and "\n" not in err


def test_conv_without_images_is_a_one_line_error(capsys, tmp_path):
    assert main(["run", "--conv", "8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--conv: generated-0 has no image shape" in err and "\n" not in err


def test_a_conv_checkpoint_evaluated_as_dense_is_a_one_line_error(tmp_path, capsys):
    assert main(["run", *SMALL, "--mode", "backprop", "--train-subset", "256", "--epochs", "1",
                 "--out", str(tmp_path)]) == 0
    saved = checkpoint.latest(tmp_path)
    dense = {**saved.config, "conv": "", "image": []}
    for _ in range(2):   # the newest checkpoint and the previous one
        checkpoint.save(tmp_path, dense, saved.states, saved.progress)
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error:") and "conv" in err and "\n" not in err
