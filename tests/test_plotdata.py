"""`dni plot` on hostile run directories (one-line errors, bad records skipped and counted) and in bounded memory."""
import importlib.util
import json
import os
import tracemalloc

import numpy as np
import pytest

from coordinator.cli import main
from coordinator.plotdata import MAX_LINE, POINTS, load_run, read_metrics

PNG = b"\x89PNG\r\n\x1a\n"
GOOD = [{"stage": s, "step": i, "latency_ms": 1.0 + i % 7, "loss": 2.0 / (i + 1), "cos": 0.5, "synth_loss": 0.1,
         "staleness": 1} for i in range(40) for s in (1, 2)]
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra")


def run_dir(tmp_path, extra: bytes = b"", summary: bytes | None = None):
    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in GOOD) + extra)
    if summary is not None:
        (d / "summary.json").write_bytes(summary)
    return d


BAD_LINES = {
    "not objects": b'[1, 2]\n"x"\n3\nnull\n',
    "wrong types": b'{"stage": "1", "step": 1}\n{"stage": 1, "step": 1.5}\n{"stage": true, "step": 1}\n',
    "missing keys": b'{"step": 1, "loss": 1}\n{"stage": 1}\n{}\n',
    "huge numbers": b'{"stage": 1, "step": 1e400}\n{"stage": 1, "step": ' + b"9" * 400 + b'}\n'
                    b'{"stage": 1, "step": -1}\n{"stage": 99999999999999999999, "step": 1}\n',
    "not JSON": b'{"stage": 1, "st\n\xff\xfe\x00garbage\n' + b"[" * 100_000 + b"\n",
    "a line over the limit": b'{"stage": 1, "step": 1, "pad": "' + b"x" * (2 * MAX_LINE) + b'"}\n',
}
SUMMARIES = [b"{not json", b"[1, 2]", b'"x"', b"\xff" * 10, b"[" * 100_000,
             b'{"history": 3, "mode": 7, "stages": "x"}',
             b'{"history": [1, {"epoch": "a", "test_accuracy": 0.5}, {"epoch": 1, "test_accuracy": NaN}, '
             b'{"epoch": 1e999}], "stages": 1e400}',
             b'{"mode": "' + b"m" * 10_000 + b'", "stages": ' + b"9" * 400 + b'}']
BAD_VALUES = (b'{"stage": 1, "step": 3, "loss": NaN, "latency_ms": Infinity, "cos": -Infinity}\n'
              b'{"stage": 1, "step": 4, "loss": "x", "latency_ms": ' + b"9" * 400 + b', "cos": 1e999}\n'
              b'{"stage": 3, "step": 4, "cos": 0.5}\n')   # a cosine without the synthesizer's loss


@pytest.mark.parametrize("case", BAD_LINES)
def test_bad_lines_are_skipped_and_counted(case, tmp_path):
    bad = BAD_LINES[case].count(b"\n")
    assert f"{bad} of {len(GOOD) + bad} lines skipped" in load_run(run_dir(tmp_path, BAD_LINES[case]))["notes"][0]


def test_bad_values_are_left_out_of_the_curves(tmp_path):
    run = load_run(run_dir(tmp_path, BAD_VALUES))
    for keys in run["series"].values():
        assert all(np.isfinite(v).all() for _, v in keys.values())
    assert run["latency"][1].n == 40 and run["notes"] == []


def test_a_validation_record_is_drawn_only_with_its_accuracy_and_its_time(tmp_path):
    records = (b'{"stage": 0, "step": 9, "samples": 1280, "train_seconds": 0.5, "val_accuracy": 0.75}\n'
               b'{"stage": 0, "step": 19, "samples": 2560, "val_accuracy": 0.8}\n'
               b'{"stage": 0, "step": 29, "train_seconds": "x", "val_accuracy": 0.9}\n'
               b'{"stage": 0, "step": 39, "train_seconds": 1.5, "val_accuracy": NaN}\n')
    keys = load_run(run_dir(tmp_path, records))["series"][0]
    assert [list(v) for v in keys["train_seconds"]] == [[9], [0.5]] and list(keys["val_accuracy"][1]) == [0.75]


@pytest.mark.parametrize("summary", SUMMARIES)
def test_a_bad_summary_is_left_out_in_one_line(summary, tmp_path):
    run = load_run(run_dir(tmp_path, summary=summary))
    assert run["history"] == [] and len(run["name"]) < 40 and len(run["notes"]) <= 1


@pytest.mark.slow   # a plot drawn: 4-6 s on a busy machine
@needs_matplotlib
def test_dni_plot_draws_a_hostile_run_and_says_what_it_left_out(tmp_path, capsys):
    d = run_dir(tmp_path, b"".join(BAD_LINES.values()) + BAD_VALUES, SUMMARIES[-2])
    assert main(["plot", str(d), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG
    bad, values = (sum(x.count(b"\n") for x in BAD_LINES.values()), BAD_VALUES.count(b"\n"))
    err = capsys.readouterr().err
    assert f"{bad} of {len(GOOD) + bad + values} lines skipped" in err and err.count("\n") == 1


def test_a_directory_in_place_of_a_run_file(tmp_path, capsys):
    d = run_dir(tmp_path)
    (d / "summary.json").mkdir()
    assert load_run(d)["notes"] == [f"{d / 'summary.json'}: not a regular file, left out"]
    (d / "metrics.jsonl").unlink()
    (d / "metrics.jsonl").mkdir()
    assert main(["plot", str(d)]) == 2
    os.rmdir(d / "metrics.jsonl")
    os.mkfifo(d / "metrics.jsonl")   # refused, not read: reading would wait for a writer
    assert main(["plot", str(d)]) == 2
    assert capsys.readouterr().err.count("no metrics.jsonl (is it a dni run directory?)\n") == 2


def test_a_png_path_that_cannot_be_written_is_a_one_line_error_before_any_reading(tmp_path, capsys):
    assert main(["plot", str(run_dir(tmp_path)), "--out", str(tmp_path / "no" / "p.png")]) == 2
    assert capsys.readouterr().err == f"dni: error: --out {tmp_path / 'no' / 'p.png'}: no directory {tmp_path / 'no'}\n"


def test_a_long_run_is_read_in_bounded_memory(tmp_path):
    path = tmp_path / "metrics.jsonl"
    steps = 20_000
    with open(path, "w") as f:
        for i in range(steps):
            f.write(json.dumps({"stage": 1, "step": i, "latency_ms": 1 + i % 10, "loss": float(i)}) + "\n")
    tracemalloc.start()
    curves, latency, read, skipped = read_metrics(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Kept points would take ~8 MB here (the old reader held ~400 bytes a record).
    assert peak < 1_000_000, peak
    assert (read, skipped) == (steps, 0) and latency[1].n == steps
    s, v = curves[1]["loss"].arrays()
    assert POINTS <= len(s) <= 2 * POINTS and np.array_equal(s, v)   # each bin's mean step is its mean loss
