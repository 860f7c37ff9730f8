"""Tests for coordinator.data: IDX parsing, MNIST loading, the generated task and batching."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from coordinator.data import MNIST_FILES, DataError, batches, generated_task, load_idx, load_mnist

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
TRAIN_LABELS_GZ = MNIST_DIR / "train-labels-idx1-ubyte.gz"


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    return header + np.asarray(array.shape, dtype=">u4").tobytes() + array.astype(np.uint8).tobytes()


def write_fake_mnist(directory: Path, n_train=6, n_test=4, train_labels=None) -> None:
    """A tiny, valid MNIST directory (uncompressed), optionally with a mismatched label file."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)),
        "y_train": np.arange(n_train) % 10 if train_labels is None else train_labels,
        "x_test": rng.integers(0, 256, (n_test, 28, 28)),
        "y_test": np.arange(n_test) % 10,
    }
    for key, stem in MNIST_FILES.items():
        (directory / stem).write_bytes(idx_bytes(np.asarray(arrays[key])))


@pytest.fixture(scope="module")
def mnist_data():
    return load_mnist(MNIST_DIR)


def test_mnist_shapes_and_counts(mnist_data):
    assert mnist_data.x_train.shape == (60000, 784) and mnist_data.x_test.shape == (10000, 784)
    assert mnist_data.x_train.dtype == np.float32 and mnist_data.y_train.dtype == np.int64
    assert mnist_data.x_train.flags.c_contiguous
    assert 0.0 == mnist_data.x_train.min() and mnist_data.x_train.max() == 1.0
    assert mnist_data.y_test.shape == (10000,)
    assert np.bincount(mnist_data.y_train)[0] == 5923
    assert mnist_data.n_classes == 10 and mnist_data.n_features == 784


def test_mnist_class_filter_remaps_labels():
    d = load_mnist(MNIST_DIR, classes=[0, 1])
    assert (len(d.x_train), len(d.x_test)) == (12665, 2115)
    assert set(np.unique(d.y_train)) == {0, 1} and set(np.unique(d.y_test)) == {0, 1}
    assert d.n_classes == 2 and d.x_train.shape[1] == 784

    # The given order defines the new labels: digit 1 becomes label 0.
    swapped = load_mnist(MNIST_DIR, classes=[1, 0])
    assert np.array_equal(swapped.y_train, 1 - d.y_train)


def test_missing_class_is_an_error(tmp_path):
    write_fake_mnist(tmp_path)  # labels 0..5 in train, 0..3 in test
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path, classes=[0, 5])
    with pytest.raises(DataError, match=r"\[11\]"):
        load_mnist(tmp_path, classes=[0, 11])


def test_gzipped_and_plain_idx_agree(tmp_path):
    plain = tmp_path / "train-labels-idx1-ubyte"
    plain.write_bytes(gzip.decompress(TRAIN_LABELS_GZ.read_bytes()))
    from_gz, from_plain = load_idx(TRAIN_LABELS_GZ), load_idx(plain)
    assert from_gz.shape == (60000,) and from_gz.dtype == np.uint8
    assert np.array_equal(from_gz, from_plain)


def test_plain_mnist_directory_loads(tmp_path):
    write_fake_mnist(tmp_path)
    d = load_mnist(tmp_path)
    assert d.x_train.shape == (6, 784) and d.x_test.shape == (4, 784)


def test_truncated_gzip_names_file(tmp_path):
    bad = tmp_path / "cut.gz"
    bad.write_bytes(TRAIN_LABELS_GZ.read_bytes()[:5000])
    with pytest.raises(DataError, match="cut.gz"):
        load_idx(bad)


def test_truncated_payload_names_file(tmp_path):
    bad = tmp_path / "short-idx1-ubyte"
    bad.write_bytes(idx_bytes(np.arange(10))[:-1])
    with pytest.raises(DataError, match="short-idx1-ubyte.*9 bytes.*needs 10"):
        load_idx(bad)
    too_long = tmp_path / "long-idx1-ubyte"
    too_long.write_bytes(idx_bytes(np.arange(10)) + b"\0")
    with pytest.raises(DataError, match="long-idx1-ubyte"):
        load_idx(too_long)


@pytest.mark.parametrize("magic", [b"\x00\x00\x0d\x01", b"\x01\x00\x08\x01", b"\x00\x00\x08\x00", b"PK\x03\x04"])
def test_bad_magic_names_file(tmp_path, magic):
    bad = tmp_path / "bad-magic"
    bad.write_bytes(idx_bytes(np.arange(10), magic=magic))
    with pytest.raises(DataError, match="bad-magic"):
        load_idx(bad)


def test_count_mismatch_names_files(tmp_path):
    write_fake_mnist(tmp_path, n_train=6, train_labels=np.arange(5))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*6 images.*train-labels-idx1-ubyte.*5 labels"):
        load_mnist(tmp_path)


def test_missing_file_names_expected_files_and_directory(tmp_path):
    write_fake_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "t10k-images-idx3-ubyte" in message
    assert all(stem in message for stem in MNIST_FILES.values())


def test_generated_task_is_deterministic_per_seed():
    a, b, c = generated_task(seed=3, n_train=500, n_test=100), generated_task(seed=3, n_train=500, n_test=100), \
        generated_task(seed=4, n_train=500, n_test=100)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.shape == (500, 32) and a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert a.n_classes == 10 and a.n_features == 32
    # The test split does not depend on how much training data was asked for.
    assert np.array_equal(generated_task(seed=3, n_train=50, n_test=100).x_test, a.x_test)


def train_accuracy(d, hidden, epochs, lr, seed=0):
    """Softmax classifier with ReLU hidden layers, Adam, batch 128; returns test accuracy."""
    rng = np.random.default_rng(seed)
    sizes = [d.n_features, *hidden, d.n_classes]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params += [rng.standard_normal((fan_in, fan_out)).astype(np.float32) * np.sqrt(2 / fan_in),
                   np.zeros(fan_out, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]

    def forward(x):
        acts = [x]
        for i in range(0, len(params), 2):
            z = acts[-1] @ params[i] + params[i + 1]
            acts.append(z if i == len(params) - 2 else np.maximum(z, 0))
        return acts

    step = 0
    for _ in range(epochs):
        for xb, yb in batches(d.x_train, d.y_train, 128, rng):
            acts = forward(xb)
            g = np.exp(acts[-1] - acts[-1].max(1, keepdims=True))
            g /= g.sum(1, keepdims=True)
            g[np.arange(len(yb)), yb] -= 1
            g /= len(yb)
            grads = [None] * len(params)
            for i in range(len(params) - 2, -1, -2):
                layer_in = acts[i // 2]
                grads[i], grads[i + 1] = layer_in.T @ g, g.sum(0)
                g = (g @ params[i].T) * (layer_in > 0)
            step += 1
            for p, gr, mi, vi in zip(params, grads, m, v):
                mi[:] = 0.9 * mi + 0.1 * gr
                vi[:] = 0.999 * vi + 0.001 * gr * gr
                p -= lr * (mi / (1 - 0.9 ** step)) / (np.sqrt(vi / (1 - 0.999 ** step)) + 1e-8)
    return float((forward(d.x_test)[-1].argmax(1) == d.y_test).mean())


def test_generated_task_needs_hidden_layers():
    d = generated_task(seed=0, n_train=10000, n_test=2000)
    linear = train_accuracy(d, hidden=[], epochs=10, lr=1e-2)
    mlp = train_accuracy(d, hidden=[64, 64], epochs=5, lr=1e-3)
    assert linear <= 0.75, linear
    assert mlp >= 0.9, mlp
    assert mlp - linear >= 0.2, (linear, mlp)


def test_batches_cover_one_epoch_without_dropping():
    x = np.arange(10 * 3, dtype=np.float64).reshape(10, 3)
    y = np.arange(10)
    got = list(batches(x, y, 4, np.random.default_rng(1)))
    assert [len(yb) for _, yb in got] == [4, 4, 2]
    assert all(xb.dtype == np.float32 and xb.flags.c_contiguous for xb, _ in got)
    seen_y = np.concatenate([yb for _, yb in got])
    assert sorted(seen_y) == list(range(10)) and not np.array_equal(seen_y, y)
    # Rows stay paired with their labels through the shuffle.
    assert all(np.array_equal(xb[:, 0], yb * 3) for xb, yb in got)


def test_batches_reject_bad_arguments():
    with pytest.raises(DataError, match="batch_size"):
        batches(np.zeros((3, 2)), np.zeros(3), 0, np.random.default_rng())
    with pytest.raises(DataError, match="3 rows.*2"):
        batches(np.zeros((3, 2)), np.zeros(2), 1, np.random.default_rng())


def test_centred_subtracts_the_training_mean_from_train_and_test_alike():
    d = generated_task(seed=1, n_train=500, n_test=50)
    shifted = type(d)(d.x_train + 5.0, d.y_train, d.x_test + 5.0, d.y_test, d.n_classes, d.name)
    c = shifted.centred()
    mean = shifted.x_train.mean(axis=0)
    np.testing.assert_allclose(c.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(c.x_test, shifted.x_test - mean, atol=1e-5)   # float32 means
    assert c.x_train.dtype == np.float32 and shifted.x_train.mean() > 4   # a new array; the original kept
