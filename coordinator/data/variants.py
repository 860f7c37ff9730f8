"""MNIST variants: harder tasks made from MNIST, written as MNIST-layout IDX directories that `dni run --data` reads.

    python -m coordinator.data.variants OUT_DIR [--mnist DIR]   # writes OUT_DIR/<task> for each task below

- mnist-rot: every digit rotated by a uniform random angle in [0, 360) degrees (bilinear), the
  recipe of the MNIST-rotation benchmark regenerated here. An MLP has no rotation invariance, so
  each class becomes a much wider, overlapping set of pixel patterns (6 and 9 collide).
- mnist-pairs: two digits shrunk to 14x14 side by side (rows 7-20), labelled (a + b) mod 10.
  The label is a function of both digits that no single one determines, so the net must
  recognise two digits and combine them: the gradient at a hidden layer depends on both.
- mnist-back-rand: every digit on a background of uniform random pixel noise (each pixel drawn
  from 0..255, the digit's pixel kept where it is brighter), the MNIST-background-random variation
  of Larochelle et al. 2007 regenerated here. Every input is on (mean ~0.55 against MNIST's 0.13):
  the input's scale and its common mean component are several times MNIST's, so the first layer's
  activations (the first synthesizer's input) differ in scale, and most inputs are distractors.
- mnist-rot-back-rand: rotated as mnist-rot, then on a noise background as mnist-back-rand.
Train images come only from MNIST's training set and test images only from its test set.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from coordinator.data import load_mnist


def write_idx(path: Path, a: np.ndarray) -> None:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + np.array(a.shape, dtype=">u4").tobytes()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(header + a.tobytes())
    tmp.replace(path)


def rotate(images: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Bilinear rotation of (n, 28, 28) float images about their centre."""
    n = len(images)
    c = 13.5
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32) - c
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    sx = cos * xx + sin * yy + c          # source coordinates of each output pixel
    sy = -sin * xx + cos * yy + c
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = sx - x0, sy - y0
    out = np.zeros((n, 28, 28), np.float32)
    idx = np.arange(n)[:, None, None]
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < 28) & (yi >= 0) & (yi < 28)
        out += np.where(ok, images[idx, np.clip(yi, 0, 27), np.clip(xi, 0, 27)], 0) * w
    return out


def pairs(images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator):
    small = images.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))  # 28x28 -> 14x14
    a, b = rng.integers(0, len(images), n), rng.integers(0, len(images), n)
    out = np.zeros((n, 28, 28), np.float32)
    out[:, 7:21, :14], out[:, 7:21, 14:] = small[a], small[b]
    return out, (labels[a] + labels[b]) % 10


# New tasks go at the end: one generator runs through them in this order, so appending one
# leaves the images of the earlier ones (and the figures measured on them) unchanged.
TASKS = ("mnist-rot", "mnist-pairs", "mnist-back-rand", "mnist-rot-back-rand")


def task(name: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """One split of one task from (n, 28, 28) images in [0, 1]: uint8 images and labels."""
    if name == "mnist-pairs":
        img, lab = pairs(x, y, len(x), rng)
    else:
        img, lab = (rotate(x, rng.uniform(0, 2 * np.pi, len(x)).astype(np.float32)) if "rot" in name else x), y
    img = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    if name.endswith("back-rand"):
        img = np.maximum(img, rng.integers(0, 256, img.shape, dtype=np.uint8))
    return img, lab


def make(out: Path, mnist: Path, seed: int = 0) -> None:
    d = load_mnist(mnist)
    rng = np.random.default_rng(seed)
    splits = {"train": (d.x_train.reshape(-1, 28, 28), d.y_train), "t10k": (d.x_test.reshape(-1, 28, 28), d.y_test)}
    for name in TASKS:
        (out / name).mkdir(parents=True, exist_ok=True)
        for split, (x, y) in splits.items():
            img, lab = task(name, x, y, rng)
            write_idx(out / name / f"{split}-images-idx3-ubyte", img)
            write_idx(out / name / f"{split}-labels-idx1-ubyte", lab)
        print(f"wrote {out / name}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m coordinator.data.variants", description=__doc__.splitlines()[0])
    p.add_argument("out", help="directory to write one IDX directory per task into")
    p.add_argument("--mnist", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    make(Path(a.out), Path(a.mnist), a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
