"""The targets a time box learns from: BP(lambda) along the boxes against full BPTT, and DNI + Aux's."""
import numpy as np
import pytest
from gradcheck import numeric_grad

from protocol.wireconfig import WireConfig
from workers.numerics import rnn_reference
from workers.numerics.auxtask import AuxHead
from workers.numerics.sequence_tasks import copy_task
from workers.numerics.timebox import score, train_step

K, T, B, UNITS, SYMBOLS = 4, 2, 8, 6, 3


def _setup(box_lambda: float, shared: bool = False, aux: bool = False, lr: float = 1e-30):
    # By default a rate too small to move a float32 weight: every box computes with the weights the probe uses.
    cfg = WireConfig(seed=3, cell="lstm", n_in=SYMBOLS + 1, units=UNITS, n_classes=SYMBOLS, optimizer="adam",
                     lr=lr, schedule="constant", total_steps=10, boxes=K, steps_per_box=T, mode="dni",
                     model="rnn", synth_lr=1e-3, synth_hidden=0, synth_scale=0.1, box_lambda=box_lambda,
                     shared_synth=shared, aux=aux, log_every=1, cache=4)
    boxes, store = rnn_reference.build(cfg)
    xs, ys, mask = copy_task(np.random.default_rng(0), B, 3, SYMBOLS)   # 7 steps, padded to K*T = 8
    x, y = np.zeros((K * T, B, SYMBOLS + 1), np.float32), np.full((B, K * T), -1)
    x[:len(xs)], y[:, :len(ys)] = xs, np.where(mask.T > 0, ys.T, -1)
    return boxes, store, x, y


def _targets(boxes, store, xs, y) -> dict[int, np.ndarray]:
    """Batch 0 through every box, then each M_j's target, taken as it is handed back box by box."""
    rnn_reference._share(boxes, store)
    state, stats, sent = boxes[0].cell.zero_state(B), np.zeros(3), {}
    for box in boxes:
        state, stats, sent[box.index], _ = train_step(box, 0, xs[(box.index - 1) * T:box.index * T], state, y, stats)
    got = {}
    for box in reversed(boxes[:-1]):
        got[box.index] = sent[box.index + 1]
        _, below = box.learn(0, got[box.index])
        sent[box.index] = sent[box.index] if below is None else below
    return got


def _true_boundary_gradient(store, xs, y, j: int) -> np.ndarray:
    """dL/d(state at the end of box j) of the whole sequence's mean loss: one unroll, one BPTT."""
    cell, readout = store.cell, store.readout
    states, tape = cell.forward(xs, cell.zero_state(B))
    rest, rest_tape = cell.forward(xs[j * T:], states[j * T - 1])
    _, _, d_states = score(cell, readout, rest, y, j * T, True)
    return cell.backward(rest_tape, d_states, None)[1]


def test_bp1_hands_every_synthesizer_the_true_boundary_gradient():
    boxes, store, xs, y = _setup(1.0)
    got = _targets(boxes, store, xs, y)
    for j in range(1, K):
        np.testing.assert_allclose(got[j], _true_boundary_gradient(store, xs, y, j), rtol=1e-4, atol=1e-9,
                                   err_msg=f"M_{j}")


@pytest.mark.parametrize("shared", [False, True])
def test_bootstrap_differs_from_the_truth_before_the_last_boundary(shared):
    """BP(0): the last boundary's target is still exact (the last box has no synthesizer); earlier ones
    carry the successors' (discounted) predictions instead of the future's gradient."""
    boxes, store, xs, y = _setup(0.0, shared)
    for b in range(3):   # M learns a little first, so that its predictions are not zero
        rnn_reference.step(boxes, store, b + 1, {j: {"x": xs[(j - 1) * T:j * T], "y": y} for j in range(1, K + 1)})
    got = _targets(boxes, store, xs, y)
    np.testing.assert_allclose(got[K - 1], _true_boundary_gradient(store, xs, y, K - 1), rtol=1e-4, atol=1e-9)
    assert not np.allclose(got[1], _true_boundary_gradient(store, xs, y, 1), rtol=1e-2, atol=1e-9)


def test_the_aux_head_regresses_on_its_target_and_sends_its_error_into_the_state():
    """P's gradients against finite differences; dL/dh is (err A^T) over the normaliser, times the scale."""
    rng = np.random.default_rng(1)
    head = AuxHead(5, dtype=np.float64)
    head.params["A"][...] = rng.standard_normal((5, 5))
    h, target = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    loss, grads, d_h = head.loss_and_grads(h, target, 0.3)
    for name, g in grads.items():
        numeric = numeric_grad(lambda: head.loss_and_grads(h, target, 0.3)[0] * 5, head.params[name])
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8, err_msg=name)
    rms = np.sqrt(np.mean(np.sum(h * h, axis=1)))
    err = (h / rms) @ head.params["A"] + head.params["c"] - target
    np.testing.assert_allclose(d_h, 0.3 * (err / 7) @ head.params["A"].T / rms)
    assert loss == pytest.approx(0.5 * np.sum(err ** 2) / 7 / 5)


def test_dni_aux_trains_the_head_and_the_core_from_the_next_boxes_synthetic_gradient():
    """--aux in the serial reference: P (tied) leaves zero once the targets come, and its gradients reach the
    cell through the store: the same batches without --aux end with other weights."""
    ends = {}
    for aux in (False, True):
        boxes, store, xs, y = _setup(1.0, aux=aux, lr=1e-2)
        for b in range(6):
            rnn_reference.step(boxes, store, b, {j: {"x": xs[(j - 1) * T:j * T], "y": y} for j in range(1, K + 1)})
        ends[aux] = store.params()
    assert "aux.A" not in ends[False] and np.abs(ends[True]["aux.A"]).max() > 0
    assert not np.allclose(ends[True]["cell.Wh"], ends[False]["cell.Wh"])
