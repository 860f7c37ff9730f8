"""Real multi-process training on real MNIST: every mode clears 90% test accuracy."""
import json

import pytest

from coordinator.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode, extra", [
    # Every mode at the defaults (docs/defaults.md); only the length differs.
    ("backprop", ["--epochs", "1"]),
    ("cdni", ["--epochs", "1"]),
    # Without the label, the synthetic gradient needs a second pass to carry the layers.
    ("dni", ["--epochs", "2"]),
])
def test_each_mode_learns_mnist(mode, extra, mnist, tmp_path):
    assert main(["run", "--data", str(mnist), "--mode", mode, "--hidden", "256,256",
                 "--out", str(tmp_path), "--no-progress", *extra]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.90, summary["test_accuracy"]
    assert summary["dataset"] == "mnist"
