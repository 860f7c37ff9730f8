"""Recurrent cells that unroll over one time box and backpropagate through it (truncated BPTT)."""

from __future__ import annotations

import numpy as np


def _orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random n x n orthogonal matrix: keeps the recurrent Jacobian well conditioned at init."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    # Sign fix makes the distribution uniform (Haar) instead of biased by the QR convention.
    return q * np.sign(np.diag(r))


def _sigmoid_(a: np.ndarray) -> np.ndarray:
    """In-place logistic via tanh: no overflow for large |a| and no temporaries."""
    a *= 0.5
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5
    return a


class TanhCell:
    """Vanilla RNN, h_t = tanh(x_t Wx + h_{t-1} Wh + b); the state is h itself."""

    def __init__(self, n_in: int, n_hidden: int, rng: np.random.Generator, dtype=np.float32):
        self.n_in, self.n_hidden, self.state_size = n_in, n_hidden, n_hidden
        self.dtype = np.dtype(dtype)
        self.params = {
            "Wx": (rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in)).astype(self.dtype),
            "Wh": _orthogonal(rng, n_hidden).astype(self.dtype),
            "b": np.zeros(n_hidden, self.dtype),
        }

    def zero_state(self, batch: int) -> np.ndarray:
        return np.zeros((batch, self.state_size), self.dtype)

    def output(self, state: np.ndarray) -> np.ndarray:
        return state

    def forward(self, xs: np.ndarray, state0: np.ndarray) -> tuple[np.ndarray, tuple]:
        """Unroll over xs (T, batch, n_in) from state0; returns (states (T, batch, n_hidden), tape)."""
        p = self.params
        # The input projection has no recurrence, so do all T steps in one matmul straight into
        # the output buffer; the loop then only adds the recurrent term and squashes in place.
        states = np.matmul(xs, p["Wx"], dtype=self.dtype)
        states += p["b"]
        rec = np.empty_like(state0, dtype=self.dtype)
        h = state0
        for t in range(xs.shape[0]):
            np.matmul(h, p["Wh"], out=rec)
            states[t] += rec
            h = np.tanh(states[t], out=states[t])
        return states, (xs, state0, states)

    def backward(self, tape: tuple, d_states: np.ndarray,
                 d_last: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """BPTT through the box; d_last is the gradient arriving at the final state from the future.

        Uses the current params, so call it before the optimizer touches them.
        """
        xs, state0, states = tape
        T, B, H = states.shape
        Wh = self.params["Wh"]
        # da[t] = dL/d(pre-activation at t); kept for all t so weight gradients become
        # single (T*B)-row matmuls after the loop instead of T small ones inside it.
        da = np.empty_like(states)
        dh = np.zeros((B, H), self.dtype) if d_last is None else d_last.astype(self.dtype, copy=True)
        for t in range(T - 1, -1, -1):
            dh += d_states[t]
            h = states[t]
            np.multiply(h, h, out=da[t])
            np.subtract(1.0, da[t], out=da[t])
            da[t] *= dh
            np.matmul(da[t], Wh.T, out=dh)
        h_prev = np.concatenate([state0[None], states[:-1]], axis=0, dtype=self.dtype).reshape(T * B, H)
        da2 = da.reshape(T * B, H)
        grads = {
            "Wx": np.matmul(xs.reshape(T * B, -1).T, da2, dtype=self.dtype),
            "Wh": h_prev.T @ da2,
            "b": da2.sum(axis=0),
        }
        return grads, dh


class LSTMCell:
    """LSTM with input, forget, output gates and candidate; flat state is [h, c] along the last axis.

    Packing h and c into one array lets a single message cross process boundaries and a single
    synthesizer predict the gradient for both.
    """

    def __init__(self, n_in: int, n_hidden: int, rng: np.random.Generator, dtype=np.float32):
        self.n_in, self.n_hidden, self.state_size = n_in, n_hidden, 2 * n_hidden
        self.dtype = np.dtype(dtype)
        H = n_hidden
        # Gate blocks along the last axis, in order: input i, forget f, output o, candidate g.
        b = np.zeros(4 * H, self.dtype)
        b[H:2 * H] = 1.0  # forget bias 1: remember by default so early gradients reach far back
        self.params = {
            "Wx": (rng.standard_normal((n_in, 4 * H)) / np.sqrt(n_in)).astype(self.dtype),
            "Wh": np.concatenate([_orthogonal(rng, H) for _ in range(4)], axis=1).astype(self.dtype),
            "b": b,
        }

    def zero_state(self, batch: int) -> np.ndarray:
        return np.zeros((batch, self.state_size), self.dtype)

    def output(self, state: np.ndarray) -> np.ndarray:
        return state[..., :self.n_hidden]

    def forward(self, xs: np.ndarray, state0: np.ndarray) -> tuple[np.ndarray, tuple]:
        """Unroll over xs (T, batch, n_in) from state0; returns (states (T, batch, 2*n_hidden), tape)."""
        p, H = self.params, self.n_hidden
        T, B = xs.shape[0], state0.shape[0]
        # gates holds pre-activations, then (in place) the activated i, f, o, g the backward needs.
        gates = np.matmul(xs, p["Wx"], dtype=self.dtype)
        gates += p["b"]
        states = np.empty((T, B, 2 * H), self.dtype)
        tanh_c = np.empty((T, B, H), self.dtype)
        rec = np.empty((B, 4 * H), self.dtype)
        tmp = np.empty((B, H), self.dtype)
        prev = state0
        for t in range(T):
            z = gates[t]
            np.matmul(prev[:, :H], p["Wh"], out=rec)
            z += rec
            _sigmoid_(z[:, :3 * H])
            np.tanh(z[:, 3 * H:], out=z[:, 3 * H:])
            i, f, o, g = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
            h, c = states[t, :, :H], states[t, :, H:]
            np.multiply(f, prev[:, H:], out=c)
            np.multiply(i, g, out=tmp)
            c += tmp
            np.tanh(c, out=tanh_c[t])
            np.multiply(o, tanh_c[t], out=h)
            prev = states[t]
        return states, (xs, state0, states, gates, tanh_c)

    def backward(self, tape: tuple, d_states: np.ndarray,
                 d_last: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """BPTT through the box; d_last is the gradient arriving at the final [h, c] from the future.

        Uses the current params, so call it before the optimizer touches them.
        """
        xs, state0, states, gates, tanh_c = tape
        T, B, S = states.shape
        H = self.n_hidden
        Wh = self.params["Wh"]
        dz_all = np.empty_like(gates)  # dL/d(gate pre-activations), kept for batched weight grads
        # d_state carries [dh, dc] backwards; written in place so the loop allocates nothing.
        d_state = np.zeros((B, S), self.dtype) if d_last is None else d_last.astype(self.dtype, copy=True)
        dh, dc = d_state[:, :H], d_state[:, H:]
        tmp = np.empty((B, H), self.dtype)
        one_minus_s = np.empty((B, 3 * H), self.dtype)
        for t in range(T - 1, -1, -1):
            d_state += d_states[t]
            a = gates[t]
            i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            dz = dz_all[t]
            di, df, do, dg = dz[:, :H], dz[:, H:2 * H], dz[:, 2 * H:3 * H], dz[:, 3 * H:]
            tc = tanh_c[t]
            c_prev = state0[:, H:] if t == 0 else states[t - 1, :, H:]
            # h = o * tanh(c): route dh to the output gate and into the cell.
            np.multiply(dh, tc, out=do)
            np.multiply(tc, tc, out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            tmp *= o
            tmp *= dh
            dc += tmp
            # c = f * c_prev + i * g
            np.multiply(dc, g, out=di)
            np.multiply(dc, i, out=dg)
            np.multiply(dc, c_prev, out=df)
            # Through the nonlinearities: sigmoid' = s(1-s), tanh' = 1-g^2.
            dz[:, :3 * H] *= a[:, :3 * H]
            np.subtract(1.0, a[:, :3 * H], out=one_minus_s)
            dz[:, :3 * H] *= one_minus_s
            np.multiply(g, g, out=tmp)
            np.subtract(1.0, tmp, out=tmp)
            dg *= tmp
            # Carry to the previous step: dc_prev = dc * f, dh_prev = dz Wh^T.
            dc *= f
            np.matmul(dz, Wh.T, out=dh)
        h_prev = np.concatenate([state0[None, :, :H], states[:-1, :, :H]], axis=0,
                                dtype=self.dtype).reshape(T * B, H)
        dz2 = dz_all.reshape(T * B, 4 * H)
        grads = {
            "Wx": np.matmul(xs.reshape(T * B, -1).T, dz2, dtype=self.dtype),
            "Wh": h_prev.T @ dz2,
            "b": dz2.sum(axis=0),
        }
        return grads, d_state
