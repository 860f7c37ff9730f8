"""Recurrent cells, readout and sequence data: BPTT gradients, box splitting, shapes."""

import numpy as np
import pytest
from gradcheck import numeric_grad

from workers.numerics.cells import LSTMCell, TanhCell
from workers.numerics.layers import Head
from workers.numerics.sequence_tasks import (
    chunk_sequences,
    copy_steps,
    copy_task,
    copy_task_dims,
    repeat_copy_task,
    row_sequences,
)
from workers.numerics.timebox import score

T, B, N_IN, N_H = 4, 3, 5, 4
CELLS = [TanhCell, LSTMCell]


def _objective(cell, xs, state0, d_states, d_last):
    """Scalar whose gradient wrt each state is d_states[t] (plus d_last at the end): what backward gets."""
    states, _ = cell.forward(xs, state0)
    return float(np.sum(states * d_states) + np.sum(states[-1] * d_last))


def _setup(cell_cls, seed=0):
    rng = np.random.default_rng(seed)
    cell = cell_cls(N_IN, N_H, rng, dtype=np.float64)
    # Non-trivial biases and state so every gate works away from its init point.
    for v in cell.params.values():
        v += 0.3 * rng.standard_normal(v.shape)
    xs = rng.standard_normal((T, B, N_IN))
    state0 = 0.5 * rng.standard_normal((B, cell.state_size))
    d_states = rng.standard_normal((T, B, cell.state_size))
    d_states[1] = 0.0  # one step with no outside gradient, like a step without a readout
    d_last = rng.standard_normal((B, cell.state_size))
    return cell, xs, state0, d_states, d_last


@pytest.mark.parametrize("cell_cls", CELLS)
def test_bptt_matches_finite_differences(cell_cls):
    cell, xs, state0, d_states, d_last = _setup(cell_cls)
    states, tape = cell.forward(xs, state0)
    grads, d_state0 = cell.backward(tape, d_states, d_last)

    f = lambda: _objective(cell, xs, state0, d_states, d_last)  # noqa: E731
    assert grads.keys() == cell.params.keys()
    for name, p in cell.params.items():
        assert grads[name].shape == p.shape
        np.testing.assert_allclose(grads[name], numeric_grad(f, p), rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(d_state0, numeric_grad(f, state0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cell_cls", CELLS)
def test_backward_without_d_last_equals_zero_d_last(cell_cls):
    cell, xs, state0, d_states, d_last = _setup(cell_cls)
    _, tape = cell.forward(xs, state0)
    g_none, d0_none = cell.backward(tape, d_states, None)
    g_zero, d0_zero = cell.backward(tape, d_states, np.zeros_like(d_last))
    for name in g_none:
        np.testing.assert_array_equal(g_none[name], g_zero[name])
    np.testing.assert_array_equal(d0_none, d0_zero)


@pytest.mark.parametrize("cell_cls", CELLS)
def test_two_boxes_equal_one_box(cell_cls):
    """Forward box 1 then box 2 from its last state; backward box 2 then box 1 with d_state0 as d_last."""
    cell, xs, state0, d_states, d_last = _setup(cell_cls)
    states, tape = cell.forward(xs, state0)
    grads, d_state0 = cell.backward(tape, d_states, d_last)

    k = T // 2
    states_a, tape_a = cell.forward(xs[:k], state0)
    states_b, tape_b = cell.forward(xs[k:], states_a[-1])
    np.testing.assert_allclose(np.concatenate([states_a, states_b]), states, rtol=1e-12, atol=1e-14)
    grads_b, d_mid = cell.backward(tape_b, d_states[k:], d_last)
    grads_a, d_state0_split = cell.backward(tape_a, d_states[:k], d_mid)
    for name in grads:
        np.testing.assert_allclose(grads_a[name] + grads_b[name], grads[name], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(d_state0_split, d_state0, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell_cls", CELLS)
def test_interface_shapes_and_dtype(cell_cls):
    cell = cell_cls(N_IN, N_H, np.random.default_rng(1))
    assert cell.n_hidden == N_H
    assert cell.state_size == (N_H if cell_cls is TanhCell else 2 * N_H)
    s0 = cell.zero_state(B)
    assert s0.shape == (B, cell.state_size) and s0.dtype == np.float32
    # float64 inputs (e.g. raw data, a gradient off the wire) must not promote the cell's arrays.
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((T, B, N_IN))
    states, tape = cell.forward(xs, s0.astype(np.float64))
    assert states.shape == (T, B, cell.state_size) and states.dtype == np.float32
    h = cell.output(states[-1])
    assert h.shape == (B, N_H) and np.shares_memory(h, states)
    grads, d0 = cell.backward(tape, np.zeros(states.shape), rng.standard_normal((B, cell.state_size)))
    assert all(g.dtype == np.float32 for g in grads.values()) and d0.dtype == np.float32
    assert all(p.dtype == np.float32 for p in cell.params.values())


def test_lstm_forget_bias_is_one():
    cell = LSTMCell(N_IN, N_H, np.random.default_rng(0))
    b = cell.params["b"]
    assert b.shape == (4 * N_H,)
    assert np.count_nonzero(b == 1.0) == N_H and np.count_nonzero(b) == N_H


@pytest.mark.parametrize("use_mask", [False, True])
def test_readout_matches_finite_differences(use_mask):
    """A time box's readout is the feed-forward Head, here with a mask of scored rows."""
    rng = np.random.default_rng(3)
    n, c = 6, 5
    ro = Head(N_H, c, rng, dtype=np.float64)
    ro.params["b"] += rng.standard_normal(c)
    h = rng.standard_normal((n, N_H))
    y = rng.integers(0, c, n)
    mask = np.array([1, 0, 1, 1, 0, 1], float) if use_mask else None
    loss, correct, grads, d_h = ro.loss_and_grads(h, y, mask)

    f = lambda: ro.loss_and_grads(h, y, mask)[0]  # noqa: E731
    for name, p in ro.params.items():
        np.testing.assert_allclose(grads[name], numeric_grad(f, p), rtol=1e-5, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(d_h, numeric_grad(f, h), rtol=1e-5, atol=1e-8)

    logits = h @ ro.params["W"] + ro.params["b"]
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    w = np.ones(n) if mask is None else mask
    assert loss == pytest.approx(-(w * logp[np.arange(n), y]).sum() / w.sum(), rel=1e-12)
    pred = logits.argmax(1)
    assert correct == int(((pred == y) & (w > 0)).sum())


def test_copy_task_layout():
    rng = np.random.default_rng(4)
    L, batch, n_sym = 5, 7, 6
    xs, ys, mask = copy_task(rng, batch, L, n_sym)
    n_in, n_classes = copy_task_dims(n_sym)
    assert (n_in, n_classes) == (n_sym + 1, n_sym)
    assert xs.shape == (2 * L + 1, batch, n_in) and xs.dtype == np.float32
    assert ys.shape == mask.shape == (2 * L + 1, batch)
    np.testing.assert_array_equal(mask[:L + 1], 0.0)
    np.testing.assert_array_equal(mask[L + 1:], 1.0)
    # Read phase: one symbol per step, no delimiter; then the delimiter alone; then silence.
    np.testing.assert_array_equal(xs[:L].sum(-1), 1.0)
    np.testing.assert_array_equal(xs[:L, :, n_sym], 0.0)
    np.testing.assert_array_equal(xs[L], np.eye(n_in)[n_sym][None].repeat(batch, 0))
    np.testing.assert_array_equal(xs[L + 1:], 0.0)
    # Targets echo the inputs in order.
    np.testing.assert_array_equal(ys[L + 1:], xs[:L].argmax(-1))
    assert ys.max() < n_classes and ys.min() >= 0


def test_repeat_copy_task_on_hand_made_sequences():
    """Symbols (3, 1) and (0, 2), written 2 and 1 times of at most 2: the exact inputs, targets and mask."""
    class Drawn:   # the draws the generator makes, in its order: the symbols (L, batch), then the counts
        def __init__(self):
            self.draws = [np.array([[3, 0], [1, 2]]), np.array([2, 1])]

        def integers(self, low, high, size):
            out = self.draws.pop(0)
            assert out.shape == np.shape(np.empty(size)) and low <= out.min() and out.max() < high
            return out

    n_sym, L, R = 4, 2, 2
    xs, ys, mask = repeat_copy_task(Drawn(), 2, L, R, n_sym)
    assert copy_task_dims(n_sym, R) == (n_sym + 2, n_sym) and copy_steps(L, R) == 7
    assert xs.shape == (7, 2, n_sym + 2)
    one = np.eye(n_sym + 2, dtype=np.float32)
    np.testing.assert_array_equal(xs[:, 0], [one[3], one[1], one[4] + one[5], *np.zeros((4, 6))])
    np.testing.assert_array_equal(xs[:, 1], [one[0], one[2], one[4] + 0.5 * one[5], *np.zeros((4, 6))])
    np.testing.assert_array_equal(mask.T, [[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(ys[3:].T, [[3, 1, 3, 1], [0, 2, 0, 2]])


def test_repeat_copy_is_scored_on_its_written_steps_only():
    """The scorer over a hand-made Repeat Copy sequence: a readout sure of the right symbol scores 0 bits and
    counts exactly the R*L written steps; a uniform one scores log2(symbols) bits on them."""
    n_sym, L, R, B = 4, 2, 2, 3
    xs, ys, mask = repeat_copy_task(np.random.default_rng(0), B, L, R, n_sym)
    y = np.where(mask.T > 0, ys.T, -1)
    cell, readout = TanhCell(1, n_sym, np.random.default_rng(1)), Head(n_sym, n_sym, np.random.default_rng(2))
    readout.params["W"][...] = 50 * np.eye(n_sym)
    readout.params["b"][...] = 0
    states = np.eye(n_sym, dtype=np.float32)[np.maximum(ys, 0)]   # h = onehot(target) at every step (tanh: h)
    (loss_sum, correct, n), _, _ = score(cell, readout, states, y, 0, True)
    assert n == correct == int(mask.sum()) and n == L * int(xs[L, :, n_sym + 1].sum() * R)
    assert loss_sum / n < 1e-6
    readout.params["W"][...] = 0
    (loss_sum, _, n), _, _ = score(cell, readout, states, y, 0, True)
    assert loss_sum / n / np.log(2) == pytest.approx(np.log2(n_sym))


def test_mnist_sequence_shapes():
    x = np.arange(3 * 784, dtype=np.float32).reshape(3, 784)
    rows = row_sequences(x)
    assert rows.shape == (28, 3, 28)
    np.testing.assert_array_equal(rows[5, 2], x[2, 5 * 28:6 * 28])
    np.testing.assert_array_equal(row_sequences(x.reshape(3, 28, 28)), rows)

    chunks = chunk_sequences(x, 4)
    assert chunks.shape == (4, 3, 196)
    np.testing.assert_array_equal(chunks[1, 0], x[0, 196:392])
    np.testing.assert_array_equal(chunk_sequences(x, 28), rows)
    for bad in (5, 0, 785):
        with pytest.raises(ValueError):
            chunk_sequences(x, bad)
