"""`dni bench sweep`: a tiny grid on the generated task, scored on held-out training examples only."""
import dataclasses
import json

import numpy as np
import pytest

from coordinator.bench.defaults import delayed
from coordinator.cli import main
from coordinator.data import generated_task
from protocol.wireconfig import WireConfig
from workers.numerics.reference import build_network, step


def test_sweep_writes_one_row_per_configuration(tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    assert main(["bench", "sweep", "--modes", "cdni,backprop", "--stages", "3", "--width", "16", "--epochs", "2",
                 "--synth-lr", "0.1,0.3", "--val", "1000", "--train-subset", "2000", "--json", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["mode"], r["synth_lr"]) for r in rows] == [("cdni", 0.1), ("cdni", 0.3), ("backprop", 0.0)]
    for r in rows:
        assert 0 <= r["val_accuracy"] <= 1 and len(r["val_history"]) == 2 and r["delay"] == 1
    assert "| cdni | 3 |" in capsys.readouterr().out


def test_validation_is_carved_from_the_training_set():
    data = generated_task(n_train=3000, n_test=500)
    xt, yt, xv, yv = delayed.split(data, 1000, 0)
    assert len(xt) == 2000 and len(xv) == 1000
    assert np.shares_memory(xv, data.x_train) and not np.shares_memory(xv, data.x_test)


def test_centring_uses_the_training_examples_mean_only():
    data = generated_task(n_train=3000, n_test=500)
    spec = {"mode": "backprop", "stages": 2, "width": 8, "optimizer": "adam", "lr": 1e-3, "synth_lr": 0.0,
            "synth_hidden": 0, "bp_lambda": 0.0, "seed": 0, "warmup": 0}
    moved = dataclasses.replace(data, x_train=np.concatenate([data.x_train[:2000], data.x_train[2000:] + 5]))
    # Held-out examples moved far away: with their mean in the centring, the model would see other inputs.
    a = delayed.train_one(data, spec, 1, 128, 0, 1000, 0, centre=True)
    b = delayed.train_one(moved, spec, 1, 128, 0, 1000, 0, centre=True)
    assert a["train_loss"] == b["train_loss"]


@pytest.mark.parametrize("bp_lambda", [0.0, 0.5, 1.0])
def test_delay_zero_is_the_reference_step(bp_lambda):
    """With no delay the sweep's step does exactly what workers/numerics/reference.step does."""
    data = generated_task(n_train=512, n_test=10)
    cfg = WireConfig(sizes=(32, 16, 16, 16, 10), mode="cdni", optimizer="adam", lr=1e-3, schedule="constant",
                     total_steps=0, synth_lr=0.3, synth_hidden=0, seed=0, log_every=1, cache=16, bp_lambda=bp_lambda)
    a, b = build_network(cfg), build_network(cfg)
    pending = []
    for i in range(4):
        x, y = data.x_train[i * 128:(i + 1) * 128], data.y_train[i * 128:(i + 1) * 128]
        assert delayed.delayed_step(a, i, x, y, pending, 0) == step(b, i, x, y)
    for sa, sb in zip(a, b):
        for k, v in sa.state().items():
            np.testing.assert_array_equal(v, sb.state()[k])



def test_a_hop_delay_brings_each_stage_its_target_a_hop_later_than_the_stage_above():
    """BP(1) down a slow pipeline: the top hidden stage fits batch b's target after b's step, stage 2 one batch
    later, stage 1 two (a fit takes the batch out of its stage's in-flight cache)."""
    data = generated_task(n_train=1024, n_test=10)
    cfg = WireConfig(sizes=(32, 16, 16, 16, 10), mode="cdni", optimizer="adam", lr=1e-3, schedule="constant",
                     total_steps=0, synth_lr=0.3, synth_hidden=0, seed=0, log_every=1, cache=16, bp_lambda=1.0)
    net, pending = build_network(cfg), []
    for i in range(6):
        delayed.delayed_step(net, i, data.x_train[i * 128:(i + 1) * 128], data.y_train[i * 128:(i + 1) * 128],
                             pending, 0, hop=1)
        held = [sorted(s.inflight.batches) for s in net[:-1]]
        assert held == [[b for b in (i - 1, i) if b >= 0], [i], []], (i, held)


def test_the_sweep_reports_when_validation_first_reached_the_target(tmp_path):
    out = tmp_path / "s.jsonl"
    assert main(["bench", "sweep", "--modes", "cdni", "--stages", "3", "--width", "16", "--epochs", "1",
                 "--val", "1000", "--train-subset", "2048", "--hop-delay", "0,2", "--eval-every", "4",
                 "--target", "0.1", "--json", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["hop"] for r in rows] == [0, 2]
    for r in rows:
        assert [n for n, _ in r["curve"]] == [4 * 128 * k for k in range(1, 5)]
        first = next(n for n, acc in r["curve"] if acc >= 0.1)
        assert r["samples_to_target"] == first
