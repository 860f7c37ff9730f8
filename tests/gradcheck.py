"""Central finite differences, shared by the gradient tests."""
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
