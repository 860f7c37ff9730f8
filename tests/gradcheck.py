"""Central finite differences, and the gradient check every synthesizer (dense or conv) passes."""
import numpy as np


def numeric_grad(f, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f() / d array, perturbing `array` in place one element at a time."""
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        old = array[i]
        array[i] = old + eps
        up = f()
        array[i] = old - eps
        down = f()
        array[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def check_synthesizer(synth, rng: np.random.Generator, n: int, width: int, n_classes: int, atol: float) -> None:
    """A synthesizer's loss gradients against finite differences for every learned parameter, off the zero
    init; it learns its readout (A, c) and, linear under cDNI, its class part E (a hidden layer is fixed)."""
    for p in synth.params.values():  # move off the zero init so every path carries gradient
        p += rng.standard_normal(p.shape) * 0.3
    h, target = rng.standard_normal((n, width)), rng.standard_normal((n, width))
    y = rng.integers(0, max(n_classes, 1), n)

    def loss():
        return synth.loss_and_grads(h, y, target)[0]

    _, grads = synth.loss_and_grads(h, y, target)
    assert set(grads) == set(synth.learned) == ({"A", "c"} | ({"E"} if n_classes and not synth.hidden else set()))
    for name in synth.learned:
        np.testing.assert_allclose(grads[name], numeric_grad(loss, synth.params[name]), rtol=1e-5, atol=atol)
