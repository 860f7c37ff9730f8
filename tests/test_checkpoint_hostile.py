"""Tampered checkpoints: each is refused in one line naming the entry, and `dni eval` and `--resume` fall back
to model.prev.npz; compatible dtypes (another byte order, float16) are converted before any worker sees them."""
import io
import json
import re
import shutil
import zipfile

import numpy as np
import pytest
from conftest import MNIST
from resumable import assert_same_checkpoint, summary
from timing import FAST

from coordinator import checkpoint
from coordinator.cli import main

W = "stage1/layer.W.npy"
# Locked backprop with a fixed seed: a resumed run's weights do not depend on timing (see test_resume).
JOB = ["--mode", "backprop", "--hidden", "8", "--train-subset", "512", "--epochs", "1", "--checkpoint-every", "3",
       "--seed", "4", *FAST]
RNN = ["--model", "rnn", "--task", "mnist01-chunks", "--boxes", "2", "--steps-per-box", "2", "--units", "8",
       "--train-subset", "256", "--batch-size", "64", "--epochs", "1", "--checkpoint-every", "3", *FAST]
SERVICE = "stage3/cell.Wh.npy"   # the tied weights, held by the parameter service after the 2 boxes


def trained(tmp_path_factory, job: list[str]):
    """A real run's directory: model.npz at step 4 (the end), model.prev.npz at step 3."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["run", "--data", str(MNIST), *job, "--out", str(run)]) == 0
    assert checkpoint.read(run / checkpoint.PREVIOUS_FILE).progress["step"] == 3
    return run


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return trained(tmp_path_factory, JOB)


@pytest.fixture(scope="module")
def recurrent(tmp_path_factory):
    return trained(tmp_path_factory, RNN)


def entries(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def npy(a: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, a, allow_pickle=False)
    return out.getvalue()


def decoded(raw: bytes) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)


def edited(name: str, change):
    """A tampering: entry `name` (a JSON object or an array) replaced by change(it)."""
    def tamper(parts: dict[str, bytes]) -> None:
        value = decoded(parts[name])
        if value.dtype.kind == "U":
            obj = json.loads(str(value))
            change(obj)
            parts[name] = npy(np.array(json.dumps(obj)))
        else:
            parts[name] = npy(change(value))
    return tamper


def huge_header(parts: dict[str, bytes]) -> None:
    """The weight's header declares 2^36 elements; its data stays the real one."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2 ** 18, 2 ** 18)})
    parts[W] = header.getvalue() + decoded(parts[W]).tobytes()


def nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[0] = np.nan
    return a


REFUSED = {   # case: (tampering, what the one-line error names)
    "2^36 elements": (huge_header, "stage1/layer.W has shape (262144, 262144)"),
    "step 2^70": (edited("progress.npy", lambda p: p.update(step=2 ** 70)), "its progress's step"),
    "sizes 200000": (edited("config.npy", lambda c: c.update(sizes=[784, 200000, 10])), "its config's sizes"),
    "a NaN": (edited(W, nan), "stage1/layer.W holds 1 non-finite values"),
    "int8": (edited(W, lambda a: a.astype(np.int8)), "stage1/layer.W is int8"),
    "bool": (edited(W, lambda a: a > 0), "stage1/layer.W is bool"),
    "complex": (edited(W, lambda a: a.astype(np.complex64)), "stage1/layer.W is complex64"),
    "eval_batch -5": (edited("config.npy", lambda c: c.update(eval_batch=-5)), "--eval-batch must be at least 1"),
    "no rng": (edited("progress.npy", lambda p: p.update(rng={})), "its progress's rng is not a PCG64 state"),
}


def tampered(original, where, tamper) -> tuple:
    run = where / "run"
    shutil.copytree(original, run)
    newest = run / checkpoint.MODEL_FILE
    parts = entries(newest)
    tamper(parts)
    newest.unlink()
    with zipfile.ZipFile(newest, "w") as zf:
        for name, raw in parts.items():
            zf.writestr(name, raw)
    return run, newest


@pytest.mark.parametrize("case", REFUSED)
def test_a_tampered_checkpoint_is_refused_naming_the_entry_and_the_previous_is_used(case, original, tmp_path,
                                                                                    capsys, caplog):
    tamper, named = REFUSED[case]
    resumed, _ = tampered(original, tmp_path / "resumed", tamper)
    assert main(["run", "--resume", str(resumed), "--epochs", "2", *FAST]) == 0
    assert summary(resumed)["resumes"] == 1 and summary(resumed)["steps"] == 8
    assert any(named in r.getMessage() and "using the previous checkpoint" in r.getMessage() for r in caplog.records)
    run, newest = tampered(original, tmp_path / "evaluated", tamper)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert "checkpoint step 3" in capsys.readouterr().out
    with pytest.raises(ValueError) as refused:
        checkpoint.read(newest)
    message = str(refused.value)
    assert message.startswith(f"corrupt checkpoint {newest}: ") and named in message and "\n" not in message


def test_without_a_sound_previous_the_error_is_one_line(original, tmp_path, capsys):
    run, newest = tampered(original, tmp_path, edited(W, nan))
    shutil.copy(newest, run / checkpoint.PREVIOUS_FILE)
    capsys.readouterr()
    for command in (["eval", str(run)], ["run", "--resume", str(run), "--epochs", "2", *FAST]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "stage1/layer.W holds 1 non-finite values" in err, err


def zip_bomb(path) -> None:
    """One entry of 1 GiB of zeros (a few MB compressed) in place of the newest checkpoint's weight."""
    parts = entries(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, raw in parts.items():
            if name != W:
                zf.writestr(name, raw)
        with zf.open(W, "w", force_zip64=True) as f:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (2 ** 28,)})
            f.write(header.getvalue())
            for _ in range(64):
                f.write(bytes(2 ** 24))


def test_a_zip_bomb_is_refused_from_the_directory_before_any_byte_is_inflated(original, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(original, run)
    zip_bomb(run / checkpoint.MODEL_FILE)
    with pytest.raises(ValueError, match=r"entry stage1/layer\.W declares \d+ bytes uncompressed, above the bound"):
        checkpoint.read(run / checkpoint.MODEL_FILE)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert "checkpoint step 3" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", [">f4", "float16"])
def test_a_compatible_dtype_is_converted_before_any_worker_sees_it(dtype, original, tmp_path):
    """Big-endian weights load as the same numbers (not byte-swapped), float16 ones as float32; a resumed run
    goes on exactly as from the same numbers saved as float32."""
    run, _ = tampered(original, tmp_path, edited(W, lambda a: a.astype(dtype)))
    same, _ = tampered(original, tmp_path / "same", edited(W, lambda a: a.astype(dtype).astype(np.float32)))
    for where in (run, same):
        assert main(["run", "--resume", str(where), "--epochs", "2", *FAST]) == 0
        assert summary(where)["resumes"] == 1
    assert_same_checkpoint(same, run)
    assert checkpoint.read(run / checkpoint.MODEL_FILE).states[1]["layer.W"].dtype == np.float32


def without_the_service(parts: dict[str, bytes]) -> None:
    for name in [n for n in parts if n.startswith("stage3/")]:
        del parts[name]


@pytest.mark.parametrize("tamper, named", [(edited(SERVICE, nan), "stage3/cell.Wh holds 1 non-finite values"),
                                           (without_the_service, "it holds stages [1, 2], the config's network "
                                                                 "has 1 to 3")], ids=["a NaN", "no service"])
def test_a_tampered_recurrent_checkpoint_falls_back_too(tamper, named, recurrent, tmp_path, capsys):
    run, newest = tampered(recurrent, tmp_path, tamper)
    with pytest.raises(ValueError, match=re.escape(named)):
        checkpoint.read(newest)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert "checkpoint step 3" in capsys.readouterr().out


def test_big_endian_recurrent_weights_load_as_the_same_numbers(recurrent, tmp_path):
    run, newest = tampered(recurrent, tmp_path, edited(SERVICE, lambda a: a.astype(">f4")))
    want = checkpoint.read(recurrent / checkpoint.MODEL_FILE).states[3]["cell.Wh"]
    got = checkpoint.read(newest).states[3]["cell.Wh"]
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_a_sound_checkpoint_whose_config_holds_only_some_options_is_not_refused(tmp_path, capsys):
    """A checkpoint's config does not hold --batch-size: --micro-batches 6 is checked against the run's 60 (its
    progress's config), not the default 128 it does not divide."""
    run = tmp_path / "run"
    job = ["--mode", "gpipe", "--batch-size", "60", "--micro-batches", "6", "--hidden", "8", "--train-subset", "240",
           "--epochs", "1", *FAST]
    assert main(["run", "--data", str(MNIST), *job, "--out", str(run)]) == 0
    assert checkpoint.read(run / checkpoint.MODEL_FILE).progress["config"]["batch_size"] == 60
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert "checkpoint step 4" in capsys.readouterr().out
