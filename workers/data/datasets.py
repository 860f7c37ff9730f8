"""Datasets: MNIST from IDX files, a built-in synthetic task, and minibatching."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
# IDX allows up to 255 dimensions; more than 4 in a dataset file means a corrupt header.
_MAX_DIMS = 4


class DataError(ValueError):
    """A dataset file or dataset argument is missing, malformed or inconsistent."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays with == is ambiguous
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    name: str
    x_val: np.ndarray | None = None   # a validation split held out of the training set (see held_out)
    y_val: np.ndarray | None = None
    image: tuple[int, ...] = ()       # an example's (height, width, channels) if it is an image (its flat rows NHWC)
    pixel_scale: float = 0.0          # images: x * pixel_scale are the file's bytes (0: the examples are floats)
    offset: np.ndarray | None = None  # what centred() subtracted

    def as_stored(self, x: np.ndarray) -> np.ndarray:
        """Examples as the data's own bytes: uint8 pixels for images, float32 else (--synthetic-inputs sends them)."""
        if not self.pixel_scale:
            return x
        pixels = x + self.offset if self.offset is not None else x.copy()
        pixels *= self.pixel_scale
        return np.rint(pixels, out=pixels).astype(np.uint8)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    def first(self, n: int) -> "Dataset":
        """Only the first n training examples (0 = all); the test set stays whole."""
        if not n:
            return self
        return replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n])

    def held_out(self, n: int) -> "Dataset":
        """The last n training examples as the validation split, the rest for training."""
        keep = len(self.x_train) - n
        if keep < 1:
            raise DataError(f"a validation split of {n} examples leaves none of {self.name}'s "
                            f"{len(self.x_train)} to train on")
        return replace(self, x_train=self.x_train[:keep], y_train=self.y_train[:keep],
                       x_val=self.x_train[keep:], y_val=self.y_train[keep:])

    def centred(self) -> "Dataset":
        """Each input feature less its mean over the training set (test and validation examples too, with that mean).

        MNIST's pixels are all >= 0 with a large shared mean; a layer update x^T g whose rows g
        agree in sign (as an early synthetic gradient's class rows do) then moves a unit's
        pre-activation the same way for every example at once, and ReLUs die: cdni collapsed to
        11% on MNIST with a noise background (docs/defaults.md). Centred, the same update moves
        examples both ways. Backprop gains too.
        """
        mean = self.x_train.mean(axis=0, dtype=np.float64).astype(self.x_train.dtype)
        return replace(self, x_train=self.x_train - mean, x_test=self.x_test - mean,
                       x_val=None if self.x_val is None else self.x_val - mean, offset=mean)


def load_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file of unsigned bytes, gzipped or not, validating header and length.

    Returns a read-only uint8 array over the file's bytes (copy it to modify it).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero0, zero1, dtype_code, ndims = raw[:4]
    if zero0 or zero1:
        raise DataError(f"{path}: bad IDX magic 0x{raw[:4].hex()} (first two bytes must be zero)")
    if dtype_code != _UBYTE:
        raise DataError(f"{path}: unsupported IDX element type 0x{dtype_code:02x} (only 0x08 unsigned byte)")
    if not 1 <= ndims <= _MAX_DIMS:
        raise DataError(f"{path}: bad IDX dimension count {ndims}")
    header_len = 4 + 4 * ndims
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndims, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(raw) - header_len
    if actual != expected:
        raise DataError(f"{path}: payload is {actual} bytes but header shape {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def _find_mnist_file(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    expected = ", ".join(f"{s}[.gz]" for s in MNIST_FILES.values())
    raise DataError(f"{directory}: missing {stem}[.gz]; an MNIST directory needs {expected}")


def load_mnist(directory: str | Path, classes: Sequence[int] | None = None) -> Dataset:
    """Load MNIST as float32 (n, 784) in [0, 1] with int64 labels, optionally keeping only `classes`."""
    directory = Path(directory)
    paths = {key: _find_mnist_file(directory, stem) for key, stem in MNIST_FILES.items()}
    arrays = {}
    for split in ("train", "test"):
        images, labels = load_idx(paths[f"x_{split}"]), load_idx(paths[f"y_{split}"])
        if images.ndim != 3:
            raise DataError(f"{paths[f'x_{split}']}: expected 3-D images, got shape {images.shape}")
        if labels.ndim != 1:
            raise DataError(f"{paths[f'y_{split}']}: expected 1-D labels, got shape {labels.shape}")
        if len(images) != len(labels):
            raise DataError(
                f"{paths[f'x_{split}']} has {len(images)} images but "
                f"{paths[f'y_{split}']} has {len(labels)} labels"
            )
        if len(labels) and labels.max() > 9:   # a worker would take it as no class it has
            raise DataError(f"{paths[f'y_{split}']}: label {int(labels.max())} is not a digit 0-9")
        arrays[f"x_{split}"] = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
        arrays[f"y_{split}"] = labels.astype(np.int64)

    image = (*images.shape[1:], 1)   # from the IDX header: rows, columns; one channel
    if classes is None:
        return Dataset(**arrays, n_classes=10, name="mnist", pixel_scale=255.0, image=image)

    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise DataError(f"classes {classes}: need a non-empty list of distinct digits")
    for split in ("train", "test"):
        present = set(np.unique(arrays[f"y_{split}"]).tolist())
        missing = [c for c in classes if c not in present]
        if missing:
            raise DataError(f"{paths[f'y_{split}']}: classes {missing} do not occur")
    # Lookup table: digit -> new label, -1 for digits that are dropped.
    remap = np.full(256, -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    for split in ("train", "test"):
        new = remap[arrays[f"y_{split}"]]
        keep = new >= 0
        arrays[f"x_{split}"] = np.ascontiguousarray(arrays[f"x_{split}"][keep])
        arrays[f"y_{split}"] = new[keep]
    return Dataset(**arrays, n_classes=len(classes), name="mnist-" + "".join(map(str, classes)), pixel_scale=255.0,
                   image=image)


def generated_task(
    seed: int = 0,
    n_train: int = 20000,
    n_test: int = 4000,
    n_features: int = 32,
    n_classes: int = 10,
) -> Dataset:
    """A synthetic task that a linear classifier cannot solve but a small ReLU MLP can.

    Each class is a mixture of 4 Gaussian clusters whose centres are scattered in an
    8-dimensional subspace, so every class is a union of separated blobs interleaved
    with the other classes' blobs (not linearly separable). The subspace is hidden by
    a random rotation of the full feature space, with small noise in the other directions.
    """
    for label, value, low in (("n_train", n_train, 1), ("n_test", n_test, 1),
                              ("n_features", n_features, 2), ("n_classes", n_classes, 2)):
        if int(value) != value or value < low:
            raise DataError(f"generated_task: {label}={value!r} must be an integer >= {low}")
    clusters_per_class, informative = 4, min(8, n_features)
    centre_range, cluster_std, off_subspace_std = 3.0, 0.7, 0.3

    # Separate streams so the task structure and the test set do not depend on n_train.
    structure_rng, train_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    n_clusters = n_classes * clusters_per_class
    centres = structure_rng.uniform(-centre_range, centre_range, size=(n_clusters, informative))
    owner = np.arange(n_clusters) % n_classes
    rotation, _ = np.linalg.qr(structure_rng.standard_normal((n_features, n_features)))

    def sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        cluster = rng.integers(0, n_clusters, size=n)
        signal = centres[cluster] + cluster_std * rng.standard_normal((n, informative))
        rest = off_subspace_std * rng.standard_normal((n, n_features - informative))
        x = np.concatenate([signal, rest], axis=1) @ rotation.T
        return np.ascontiguousarray(x, dtype=np.float32), owner[cluster].astype(np.int64)

    x_train, y_train = sample(train_rng, n_train)
    x_test, y_test = sample(test_rng, n_test)
    return Dataset(x_train, y_train, x_test, y_test, n_classes=n_classes, name=f"generated-{seed}")


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of shuffled minibatches; the last batch holds the remainder."""
    if len(x) != len(y):
        raise DataError(f"batches: x has {len(x)} rows but y has {len(y)}")
    if batch_size < 1:
        raise DataError(f"batches: batch_size={batch_size} must be >= 1")
    return (rows(x, y, idx) for idx in batch_indices(len(x), batch_size, rng))


def batch_indices(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch's batches of n examples, as their indices: drawn at the call (one permutation), sliced lazily."""
    order = rng.permutation(n)
    return (order[start:start + batch_size] for start in range(0, n, batch_size))


def rows(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A batch's examples and labels by their indices, as the wire carries them."""
    # Fancy indexing already copies; ascontiguousarray fixes the dtype for the wire.
    return np.ascontiguousarray(x[idx], dtype=np.float32), y[idx]
