"""Every layer's and synthesizer's gradients against central finite differences (float64)."""
import numpy as np
import pytest
from gradcheck import check_synthesizer, numeric_grad

from workers.numerics.layers import Dense, Head
from workers.numerics.optimizers import SGD, Adam
from workers.numerics.synthesizers import Synthesizer

RNG = np.random.default_rng(0)


def assert_close(analytic, numeric):
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_dense_relu_gradients():
    layer = Dense(5, 4, RNG, relu=True, dtype=np.float64)
    layer.params["b"][:] = RNG.standard_normal(4) * 0.1
    x = RNG.standard_normal((6, 5))
    upstream = RNG.standard_normal((6, 4))  # L = sum(h * upstream)

    def loss():
        return float((layer.forward(x) * upstream).sum())

    grads, dx = layer.backward(x, layer.forward(x), upstream)
    for name, p in layer.params.items():
        assert_close(grads[name], numeric_grad(loss, p))
    assert_close(dx, numeric_grad(loss, x))


def test_head_gradients():
    head = Head(5, 3, RNG, dtype=np.float64)
    x, y = RNG.standard_normal((7, 5)), RNG.integers(0, 3, 7)

    def loss():
        return head.loss_and_grads(x, y)[0]

    _, _, grads, dx = head.loss_and_grads(x, y)
    for name, p in head.params.items():
        assert_close(grads[name], numeric_grad(loss, p))
    assert_close(dx, numeric_grad(loss, x))


@pytest.mark.parametrize("n_classes, hidden", [(0, 0), (3, 0), (0, 6), (3, 6)])
def test_synthesizer_gradients(n_classes, hidden):
    check_synthesizer(Synthesizer(4, RNG, n_classes=n_classes, hidden=hidden, dtype=np.float64), RNG, 5, 4,
                      n_classes, atol=1e-8)


def test_synthesizer_starts_at_zero():
    for n_classes, hidden in [(0, 0), (10, 0), (0, 32), (10, 32)]:
        synth = Synthesizer(8, RNG, n_classes=n_classes, hidden=hidden)
        g = synth.predict(RNG.standard_normal((3, 8)).astype(np.float32), np.array([0, 1, 2]))
        assert not g.any()


def test_linear_conditioned_synthesizer_learns_a_label_dependent_map():
    synth = Synthesizer(4, RNG, n_classes=2, dtype=np.float64)
    opt = Adam(synth.params, 0.05)
    h, y = RNG.standard_normal((64, 4)), RNG.integers(0, 2, 64)
    target = h @ RNG.standard_normal((4, 4)) + np.where(y[:, None] == 1, 1.0, -1.0)
    first = synth.loss_and_grads(h, y, target)[0]
    for _ in range(500):
        opt.step(synth.params, synth.loss_and_grads(h, y, target)[1])
    assert synth.loss_and_grads(h, y, target)[0] < 0.01 * first


def test_sgd_momentum_matches_the_textbook_update():
    p = {"w": np.array([1.0])}
    opt = SGD(p, lr=0.1, momentum=0.9)
    opt.step(p, {"w": np.array([1.0])})
    opt.step(p, {"w": np.array([1.0])})
    # v1 = 1, w1 = 0.9; v2 = 1.9, w2 = 0.9 - 0.19
    np.testing.assert_allclose(p["w"], [0.71])


# Two conv stages (4x4 images, 3x3 kernels, 2x2 pooling): the target goes through a conv stage's Jacobian.
CONV = {"sizes": (16, 8, 3, 8, 5), "conv": "2,3", "kernel": 3, "pool": "2", "image": (4, 4, 1)}


@pytest.mark.parametrize("net_fields", [{"sizes": (20, 16, 12, 8, 5)}, CONV], ids=["dense", "conv"])
@pytest.mark.parametrize("bp_lambda", [0.0, 1.0])
def test_bp_lambda_one_hands_each_synthesizer_the_true_gradient(bp_lambda, net_fields):
    """BP(1): the target that reaches stage 1's M is the true dL/dh1, as locked backprop computes
    it; the bootstrap (BP(0)) hands it stage 2's synthetic gradient pushed back instead, zero at
    the start (M starts at zero). Step 0: the synthetic updates are zero, so the weights agree."""
    from protocol.wireconfig import WireConfig
    from workers.numerics.reference import build_network
    from workers.numerics.stage import head_step, train_step

    def net(mode):
        return build_network(WireConfig(**net_fields, mode=mode, optimizer="adam", lr=1e-3, schedule="constant",
                                        total_steps=0, synth_lr=0.3, synth_hidden=0, seed=3, log_every=1, cache=8,
                                        bp_lambda=bp_lambda))

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, net_fields["sizes"][0])).astype(np.float32), rng.integers(0, 5, 32)
    locked, decoupled = net("backprop"), net("cdni")
    outs = []
    for stages in (locked, decoupled):
        h = x
        for s in stages[:-1]:
            h, _, _ = train_step(s, 0, h, y)
        outs.append(head_step(stages[-1], h, y)[2])
    g = outs[0]
    for s in reversed(locked[1:-1]):      # backprop: dL/dh3 -> dL/dh2 -> dL/dh1
        g, _ = s.update(0, g)
    target = outs[1]
    for s in reversed(decoupled[1:-1]):   # what stage 3, then stage 2, hand down once their targets come
        _, target = s.learn(0, target)
        if target is None:
            break
    if bp_lambda == 1:
        np.testing.assert_allclose(target, g, rtol=1e-5, atol=1e-7)
        assert np.abs(g).max() > 0
    else:
        assert target is None   # the bootstrap went down at once, at the forward pass
