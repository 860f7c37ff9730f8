"""Broken input from the user: bad values, files and checkpoints are one-line errors, and nothing is lost."""
import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile_job import Job, one_line_error

from coordinator.cli import main


def test_divergence_stops_the_run_naming_stage_and_step_and_infinite_rates_are_refused(tmp_path, capsys):
    job = Job(tmp_path, "--lr", "50", "--optimizer", "sgd", "--epochs", "2", "--checkpoint-every", "0")
    code, err = job.finish()
    assert code == 1
    one_line_error(err, "stage", "not finite at step", "--lr")
    assert not (job.out / "model.npz").exists()   # no checkpoint from non-finite weights
    assert main(["run", "--lr", "inf", "--out", str(tmp_path / "x")]) == 2
    assert "--lr must be positive and finite" in capsys.readouterr().err


def test_an_mnist_label_above_9_is_a_data_error(tmp_path, mnist, capsys):
    data = tmp_path / "mnist"
    data.mkdir()
    for f in mnist.iterdir():   # uncompressed copies (the loader reads either)
        raw = f.read_bytes()
        (data / f.name.removesuffix(".gz")).write_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    labels = next(f for f in data.iterdir() if f.name.startswith("t10k-labels"))
    raw = bytearray(labels.read_bytes())
    raw[-1] = 12
    labels.write_bytes(bytes(raw))
    assert main(["run", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    assert "label 12 is not a digit" in capsys.readouterr().err


def test_eval_rebuilds_a_generated_task_with_the_runs_seed(tmp_path, capsys):
    assert main(["run", "--hidden", "16", "--epochs", "1", "--seed", "7", "--out", str(tmp_path), "--no-progress",
                 "--heartbeat", "0.5"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    scored = json.loads((tmp_path / "summary.json").read_text())["test_accuracy"]
    assert f"test accuracy {scored:.4f}" in capsys.readouterr().out


@pytest.fixture
def made(tmp_path):
    """A finished tiny run to corrupt, a file, a directory."""
    run = tmp_path / "done"
    assert main(["run", "--hidden", "8", "--epochs", "1", "--train-subset", "512", "--out", str(run),
                 "--no-progress", "--heartbeat", "0.5"]) == 0
    (tmp_path / "file").write_text("x")
    return tmp_path


def corrupt(run: Path, how: str) -> None:
    model = run / "model.npz"
    raw = model.read_bytes()
    if how == "truncated":
        model.write_bytes(raw[:len(raw) // 2])
    elif how == "bit-flipped":   # inside the weights: a flip among the zip's own bookkeeping may be harmless
        with zipfile.ZipFile(model) as z:
            w = z.getinfo("stage1/layer.W.npy")
        name_len, extra_len = int.from_bytes(raw[w.header_offset + 26:w.header_offset + 28], "little"), \
            int.from_bytes(raw[w.header_offset + 28:w.header_offset + 30], "little")   # the local header's own
        flipped = bytearray(raw)
        flipped[w.header_offset + 30 + name_len + extra_len + w.file_size // 2] ^= 0x10
        model.write_bytes(bytes(flipped))
    elif how == "empty":
        model.write_bytes(b"")
    elif how == "random":
        model.write_bytes(np.random.default_rng(0).bytes(4096))
    else:   # the config it carries, edited
        with np.load(model) as z:
            arrays = {k: z[k] for k in z.files}
        config = json.loads(str(arrays["config"]))
        if how == "no classes":
            del config["classes"]
        else:
            config["sizes"] = []
        arrays["config"] = np.array(json.dumps(config))
        np.savez(model, **arrays)


@pytest.mark.parametrize("argv, words", [
    (["run", "--config", "{tmp}"], "--config"),
    (["run", "--out", "{tmp}/file"], "--out"),
    (["run", "--out", "{tmp}/file/under"], "--out"),
    (["run", "--heartbeat", "inf"], "--heartbeat"),
    (["run", "--heartbeat", "1e-6"], "--heartbeat"),
    (["run", "--synth-lr", "inf"], "--synth-lr"),
    (["run", "--classes", "0,1"], "--classes"),
    (["run", "--seed", "-1"], "--seed"),
    (["keys", "generate", "{tmp}/file"], "not a directory"),
    (["worker", "--coordinator", "nonsense"], "--coordinator"),
])
def test_bad_values_give_one_line_errors(argv, words, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv + (["--out", str(tmp_path / "r")] if argv[0] == "run" and "--out" not in argv else [])) == 2
    err = capsys.readouterr().err.strip()
    assert "error" in err and words in err and "\n" not in err and "Traceback" not in err, err


def test_infinite_rates_in_toml_are_refused(tmp_path, capsys):
    (tmp_path / "run.toml").write_text("lr = inf\n")
    assert main(["run", "--config", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r")]) == 2
    assert "--lr must be positive and finite" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "empty", "random", "no classes", "empty sizes"])
def test_eval_of_a_broken_checkpoint_is_a_one_line_error(how, made, capsys):
    corrupt(made / "done", how)
    capsys.readouterr()
    assert main(["eval", str(made / "done")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dni: error:") and "\n" not in err and "allow_pickle" not in err, err


def test_a_second_run_into_the_same_directory_is_refused_and_the_first_stays_whole(made, capsys):
    run = made / "done"
    metrics = (run / "metrics.jsonl").read_bytes()
    assert main(["run", "--hidden", "8", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err
    assert (run / "metrics.jsonl").read_bytes() == metrics
