"""Convolution, pooling and the conv block by finite differences, and the conv against a direct loop."""
import tracemalloc

import numpy as np
import pytest
from gradcheck import check_synthesizer, numeric_grad

from workers.numerics.conv import Conv2D
from workers.numerics.conv_synthesizer import ConvSynthesizer
from workers.numerics.layers import ConvBlock
from workers.numerics.pooling import max_pool, max_pool_backward

RNG = np.random.default_rng(0)


def assert_close(analytic, numeric):
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def direct_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The same-padded convolution as its definition, a loop over every output position."""
    n, height, width, c = x.shape
    p = (k - 1) // 2
    xp = np.zeros((n, height + k - 1, width + k - 1, c))
    xp[:, p:p + height, p:p + width] = x
    kernel = w.reshape(k, k, c, -1)
    z = np.zeros((n, height, width, kernel.shape[-1]))
    for i in range(height):
        for j in range(width):
            z[:, i, j] = np.einsum("nabc,abcf->nf", xp[:, i:i + k, j:j + k], kernel) + b
    return z


@pytest.mark.parametrize("kernel", [1, 3, 4, 5])
def test_conv_equals_its_definition(kernel):
    conv = Conv2D((6, 5, 3), 4, kernel, RNG, dtype=np.float64)
    conv.params["b"][:] = RNG.standard_normal(4)
    x = RNG.standard_normal((2, 6, 5, 3))
    np.testing.assert_allclose(conv.forward(x), direct_conv(x, conv.params["W"], conv.params["b"], kernel),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, chunk", [(3, 64), (5, 64), (4, 1)])
def test_conv_gradients(kernel, chunk):
    conv = Conv2D((5, 4, 2), 3, kernel, RNG, dtype=np.float64)
    conv.chunk = chunk   # 1: an example at a time, as a batch too large for the column buffer goes
    x = RNG.standard_normal((3, 5, 4, 2))
    upstream = RNG.standard_normal((3, 5, 4, 3))   # L = sum(z * upstream)

    def loss():
        return float((conv.forward(x) * upstream).sum())

    conv.forward(x)
    grads, dx = conv.backward(x, upstream)
    for name, p in conv.params.items():
        assert_close(grads[name], numeric_grad(loss, p))
    assert_close(dx, numeric_grad(loss, x))
    assert_close(conv.input_gradient(upstream), dx)


def test_backward_of_another_input_makes_its_own_columns():
    conv = Conv2D((4, 4, 2), 3, 3, RNG, dtype=np.float64)
    a, b = RNG.standard_normal((2, 4, 4, 2)), RNG.standard_normal((2, 4, 4, 2))
    g = RNG.standard_normal((2, 4, 4, 3))
    conv.forward(a)
    expected = conv.backward(a, g)[0]["W"]
    conv.forward(b)   # the buffer now holds b's columns
    np.testing.assert_array_equal(conv.backward(a, g)[0]["W"], expected)


@pytest.mark.parametrize("p", [2, 3])
def test_max_pool_keeps_its_argmax_and_its_gradient(p):
    z = RNG.standard_normal((2, 7, 6, 3))   # 7 rows: the last, past a whole window, is dropped
    h, argmax = max_pool(z, p)
    windows = z[:, :7 // p * p, :6 // p * p].reshape(2, 7 // p, p, 6 // p, p, 3)
    np.testing.assert_array_equal(h, windows.max(axis=(2, 4)))
    upstream = RNG.standard_normal(h.shape)

    def loss():
        return float((max_pool(z, p)[0] * upstream).sum())

    assert_close(max_pool_backward(upstream, argmax, p, np.empty_like(z)), numeric_grad(loss, z))


@pytest.mark.parametrize("pool", [1, 2])
def test_conv_block_gradients(pool):
    block = ConvBlock((6, 4, 2), 3, 3, pool, RNG, dtype=np.float64)
    block.params["b"][:] = RNG.standard_normal(3) * 0.1
    x = RNG.standard_normal((3, 6 * 4 * 2))
    h, route = block.forward_train(x)
    assert h.shape == (3, 6 // pool * 4 // pool * 3)
    upstream = RNG.standard_normal(h.shape)

    def loss():
        return float((block.forward(x) * upstream).sum())

    grads, dx = block.backward(x, h, upstream, route=route)
    for name, p in block.params.items():
        assert_close(grads[name], numeric_grad(loss, p))
    assert_close(dx, numeric_grad(loss, x))
    assert_close(block.input_gradient(h, upstream, route), dx)


@pytest.mark.parametrize("n_classes, hidden", [(0, 0), (3, 0), (0, 4), (3, 4)])
def test_conv_synthesizer_gradients(n_classes, hidden):
    check_synthesizer(ConvSynthesizer((4, 3, 2), RNG, n_classes=n_classes, hidden=hidden, dtype=np.float64), RNG,
                      5, 24, n_classes, atol=1e-7)


def test_conv_synthesizer_starts_at_zero():
    for n_classes, hidden in [(0, 0), (10, 0), (0, 8), (10, 8)]:
        synth = ConvSynthesizer((4, 4, 3), RNG, n_classes=n_classes, hidden=hidden)
        assert not synth.predict(RNG.standard_normal((3, 48)).astype(np.float32), np.array([0, 1, 2])).any()


def test_a_conv_block_reuses_its_working_arrays_across_batches():
    """After a first batch, forward and backward (with the input gradient) make no new working array: the
    columns, the padded maps, the map before the pooling and the input gradient's windows are buffers."""
    block = ConvBlock((6, 6, 4), 8, 3, 2, RNG)
    block.conv.chunk = 2   # batches of 5 go in chunks of 2, 2 and 1

    def batch():
        x = RNG.standard_normal((5, 6 * 6 * 4)).astype(np.float32)
        h, route = block.forward_train(x)
        block.backward(x, h, np.ones_like(h), route=route)
        return {name: a.ctypes.data for name, a in {**block.conv._held, "map": block._map}.items()}

    first = batch()
    assert set(first) == {"pad", "cols", "dz_pad", "dx_pad", "map"}
    assert batch() == first


def test_a_conv_synthesizer_makes_no_copy_of_its_whole_input():
    """M's normalised input is made a chunk at a time as its convolution reads it, and the class maps are added a
    few rows at a time: a prediction holds little more than its output, a fit little more than its output and its
    normalised target, and both are bit for bit what the whole batch's copies gave."""
    synth = ConvSynthesizer((28, 28, 8), RNG, n_classes=10)   # a batch's maps 3 MiB, its class maps' pieces 1 MiB
    synth.params["E"][...] = RNG.standard_normal(synth.params["E"].shape)
    h = np.maximum(RNG.standard_normal((128, 28 * 28 * 8)), 0).astype(np.float32)
    y, target = RNG.integers(0, 10, 128), RNG.standard_normal(h.shape).astype(np.float32)
    synth.fit_grads(h, y, target)   # the convolutions' buffers made
    tracemalloc.start()
    g = synth.predict(h, y)
    predicted = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    synth.fit_grads(h, y, target)
    fitted = tracemalloc.get_traced_memory()[1] - g.nbytes
    tracemalloc.stop()
    assert predicted < 1.5 * h.nbytes and fitted < 2.5 * h.nbytes
    whole = synth.readout.forward(h * synth.input_scale(h)).reshape(len(h), -1) + synth.params["E"][y]
    assert np.array_equal(g, whole)


def test_a_scaled_convolution_is_the_convolution_of_the_scaled_input():
    conv = Conv2D((6, 6, 3), 4, 3, RNG)
    conv.chunk = 2
    x, s = RNG.standard_normal((5, 6, 6, 3)).astype(np.float32), np.float32(0.37)
    dz = RNG.standard_normal((5, 6, 6, 4)).astype(np.float32)
    assert np.array_equal(conv.forward(x, scale=s), conv.forward(x * s))
    scaled, plain = conv.backward(x, dz, need_dx=False, scale=s)[0], conv.backward(x * s, dz, need_dx=False)[0]
    assert all(np.array_equal(scaled[k], plain[k]) for k in plain)
