"""`dni plot`: a tiny real run drawn into a valid PNG with every panel; without matplotlib, a one-line hint."""
import builtins
import importlib.util

import numpy as np
import pytest

from coordinator import runplot
from coordinator.cli import main
from coordinator.plotdata import load_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    for mode, every in (("cdni", "2"), ("backprop", "0")):   # the cdni run evaluates its validation split
        assert main(["run", "--mode", mode, "--hidden", "16,16", "--epochs", "2", "--train-subset", "512",
                     "--eval-every", every, "--out", str(base / mode), "--no-progress"]) == 0
    return base / "cdni", base / "backprop"


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the plot extra")
def test_plot_of_real_runs_has_every_panel(two_runs, tmp_path):
    out = tmp_path / "p.png"
    titles = runplot.draw([str(d) for d in two_runs], str(out))
    assert out.read_bytes()[:8] == PNG
    for want in ("test accuracy per epoch (%)", "training loss (head, smoothed)", "update latency per stage (CDF)"):
        assert want in titles
    assert "validation accuracy (%) against training seconds" in titles
    seconds, accuracy = (load_run(two_runs[0])["series"][0][k][1] for k in ("train_seconds", "val_accuracy"))
    assert len(seconds) == 4 and (np.diff(seconds) > 0).all() and ((accuracy > 0) & (accuracy <= 1)).all()
    for stage in (1, 2):   # each hidden stage has a synthesizer in the cdni run
        assert f"stage {stage}: cosine of synthetic gradient to target" in titles
        assert any(t.startswith(f"stage {stage}: synthesizer loss") for t in titles)
        assert f"stage {stage}: staleness (updates)" in titles
    assert main(["plot", str(two_runs[0]), "--out", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").read_bytes()[:8] == PNG


def test_plot_without_matplotlib_gives_a_one_line_hint(two_runs, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["plot", str(two_runs[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert err == runplot.HINT and "\n" not in err


def test_plot_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
