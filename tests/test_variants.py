"""Tests for coordinator.data.variants: the harder tasks are valid MNIST directories, made as described."""

import numpy as np

from coordinator.data import MNIST_FILES, load_mnist
from coordinator.data.variants import TASKS, make, write_idx

N_TRAIN, N_TEST = 40, 20


def square_mnist(directory, seed=0):
    """A tiny MNIST directory whose 'digits' are a 12x12 square of 255 on a black background."""
    rng = np.random.default_rng(seed)
    directory.mkdir()
    images = np.zeros((N_TRAIN + N_TEST, 28, 28), np.uint8)
    images[:, 8:20, 8:20] = 255
    labels = rng.integers(0, 10, N_TRAIN + N_TEST).astype(np.uint8)
    for split, s in (("train", slice(0, N_TRAIN)), ("test", slice(N_TRAIN, None))):
        write_idx(directory / MNIST_FILES[f"x_{split}"], images[s])
        write_idx(directory / MNIST_FILES[f"y_{split}"], labels[s])
    return load_mnist(directory)


def test_every_task_is_an_mnist_directory(tmp_path):
    source = square_mnist(tmp_path / "mnist")
    make(tmp_path / "tasks", tmp_path / "mnist", seed=0)
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == sorted(TASKS)
    for name in TASKS:
        d = load_mnist(tmp_path / "tasks" / name)
        assert d.x_train.shape == (N_TRAIN, 784) and d.x_test.shape == (N_TEST, 784), name
        assert d.y_train.min() >= 0 and d.y_train.max() <= 9 and d.y_test.max() <= 9, name
        if name != "mnist-pairs":   # the other tasks keep each image's own label, split by split
            assert np.array_equal(d.y_train, source.y_train) and np.array_equal(d.y_test, source.y_test), name


def test_back_rand_puts_the_digit_on_uniform_noise(tmp_path):
    source = square_mnist(tmp_path / "mnist")
    make(tmp_path / "tasks", tmp_path / "mnist", seed=0)
    d = load_mnist(tmp_path / "tasks" / "mnist-back-rand")
    for x, src in ((d.x_train, source.x_train), (d.x_test, source.x_test)):
        assert np.all(x[src == 1.0] == 1.0)             # the digit is kept where it is brighter
        noise = x[src == 0.0]                           # the background: uniform on 0..255
        assert abs(noise.mean() - 0.5) < 0.02 and abs(noise.std() - 0.2887) < 0.02, (noise.mean(), noise.std())
        assert len(np.unique(noise)) > 250
    # Fresh noise in every image, not one background pattern repeated.
    assert not np.array_equal(d.x_train[0], d.x_train[1])

    # Rotated, the square stays within 12/sqrt(2) pixels of the centre: the corners are noise alone.
    r = load_mnist(tmp_path / "tasks" / "mnist-rot-back-rand").x_train.reshape(-1, 28, 28)
    yy, xx = np.mgrid[0:28, 0:28] - 13.5
    corners = r[:, np.hypot(yy, xx) > 10]
    assert abs(corners.mean() - 0.5) < 0.02 and corners.min() < 0.05 and corners.max() > 0.95


def test_tasks_are_seeded(tmp_path):
    square_mnist(tmp_path / "mnist")
    for out, seed in (("a", 0), ("b", 0), ("c", 1)):
        make(tmp_path / out, tmp_path / "mnist", seed=seed)
    image = "mnist-back-rand/train-images-idx3-ubyte"
    assert (tmp_path / "a" / image).read_bytes() == (tmp_path / "b" / image).read_bytes()
    assert (tmp_path / "a" / image).read_bytes() != (tmp_path / "c" / image).read_bytes()
