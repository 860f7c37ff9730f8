"""Synthetic-gradient models M(h) and, conditioned on the label (cDNI), M(h, y).

The convention, the same for every synthesizer (feed-forward stages and recurrent boxes):
M predicts the per-example gradient (B times the gradient of the batch-mean loss, so the
batch size drops out), divided by sigma, a running RMS of its targets' elements. M's outputs
and its regression targets are therefore O(1) whatever the task, depth, width, batch size or
stage of training, and Adam's rate on M is a relative step: one --synth-lr serves every model.
M also sees its input normalised (h over the batch's RMS row norm), so that step means the
same for the linear map as for the biases whatever the width and the activations' scale.
"""
import numpy as np

SCALE_DECAY = 0.99  # the running mean square of the targets forgets over ~100 batches
# Work on a conv stage's maps a piece at a time, not the whole batch's copy (float64 squares: 6 MiB at the default
# net's stage 1): the elements of a piece of mean_square, the bytes of a piece of add_rows.
PIECE_ELEMENTS = 1 << 16
PIECE_BYTES = 1 << 20


class Synthesizer:
    """Predicts dL/dh from h (and y): linear, or one fixed random ReLU hidden layer; output zero-initialised.

    The zero output layer makes training start as if the gradient were 0, as in the paper.
    The label enters as a per-class bias, which equals a linear map of onehot(y) concatenated
    to h, without building the one-hot matrix.

    The hidden layer (U, d, and E when conditioned) is fixed random ReLU features of h; only the
    readout learns. Trained at the readout's rate, the hidden layer thrashed (dni on MNIST fell to
    10-64%, docs/defaults.md); the old batch-mean convention had left it frozen in effect (Adam
    steps of ~1e-4 of its weights' size).
    """

    def __init__(self, n: int, rng: np.random.Generator, n_classes: int = 0, hidden: int = 0, dtype=np.float32,
                 n_out: int = 0):
        """n: the width of what it sees; n_out: of what it predicts (0: n, a gradient for its input)."""
        self.conditioned, self.hidden = n_classes > 0, hidden
        # The parameters M learns: the readout, and the class bias when it is part of the readout.
        self.learned = ("A", "c", "E") if self.conditioned and not hidden else ("A", "c")
        self.mean_square = 0.0  # running mean square of the per-example targets' elements (0: none seen yet)
        n_last, n_out = hidden or n, n_out or n
        self.params = {"A": np.zeros((n_last, n_out), dtype), "c": np.zeros(n_out, dtype)}
        if hidden:
            self.params["U"] = (rng.standard_normal((n, hidden)) * np.sqrt(2.0 / n)).astype(dtype)
            self.params["d"] = np.zeros(hidden, dtype)
        if self.conditioned:
            # Linear: the class bias is part of the output, so it starts at zero like A.
            # MLP: it feeds the hidden layer, where a small random start breaks symmetry.
            self.params["E"] = (np.zeros((n_classes, n_out), dtype) if not hidden else
                                (rng.standard_normal((n_classes, hidden)) * 0.1).astype(dtype))

    # The share of an input row one output of M sees: 1 for a dense M, which sees it all.
    row_share = 1.0

    def _features(self, x: np.ndarray) -> np.ndarray:
        """The hidden layer's pre-activation, before the class bias: x U + d (a new array)."""
        z = x @ self.params["U"]
        z += self.params["d"]
        return z

    def _linear(self, a: np.ndarray) -> np.ndarray:
        """The readout, before the class bias: a A + c (a new array)."""
        g = a @ self.params["A"]
        g += self.params["c"]
        return g

    def _linear_grads(self, a: np.ndarray, err: np.ndarray) -> dict[str, np.ndarray]:
        """The readout's A and c gradients, given its input a and dLoss/dM = err."""
        return {"A": a.T @ err, "c": err.sum(axis=0)}

    def _hidden(self, h: np.ndarray, y) -> np.ndarray:
        z = self._features(h)  # h: the normalised input
        if self.conditioned:
            add_rows(z, self.params["E"], y)
        return np.maximum(z, 0, out=z)

    def _forward(self, h: np.ndarray, y) -> tuple[np.ndarray, np.ndarray]:
        """(M(h, y), the readout's input).

        M sees x = h / sqrt(mean_rows ||h||^2), rows of unit norm on average (a per-batch
        scalar), so Adam's step on A moves the output as much as its step on the biases does,
        whatever the width and the activations' scale.
        """
        return self._readout(h * self.input_scale(h), y)   # a new array, h's dtype

    def input_scale(self, h: np.ndarray) -> np.floating:
        """1 / the batch's RMS row norm (times row_share), in h's dtype: what M's input is scaled by."""
        rms_row = float(np.sqrt(np.einsum("ij,ij->", h, h, dtype=np.float64) / len(h))) * self.row_share
        return h.dtype.type(1.0 / max(rms_row, 1e-12))

    def _readout(self, x: np.ndarray, y) -> tuple[np.ndarray, np.ndarray]:
        """(M's output for the normalised input x, the readout's input)."""
        a = self._hidden(x, y) if self.hidden else x
        g = self._linear(a)
        if self.conditioned and not self.hidden:
            add_rows(g, self.params["E"], y)
        return g, a

    def predict(self, h: np.ndarray, y=None) -> np.ndarray:
        """M's raw output, in normalised per-example units."""
        return self._forward(h, y)[0]

    @property
    def sigma(self) -> float:
        return float(np.sqrt(self.mean_square)) if self.mean_square > 0 else 1.0

    def gradient(self, h: np.ndarray, y=None) -> np.ndarray:
        """The synthetic gradient of the batch-mean loss: sigma * M(h, y) / B."""
        g = self.predict(h, y)
        g *= self.sigma / len(h)
        return g

    def normalised_target(self, target: np.ndarray) -> np.ndarray:
        """Per-example, scale-free target B * target / sigma, after updating sigma with this batch's targets.

        target is a gradient of the batch-mean loss (dL/dh of a batch of B rows).
        """
        return self.scaled(target * len(target))  # a new array: target may be a read-only wire buffer

    def scaled(self, per_example: np.ndarray) -> np.ndarray:
        """Per-example targets (a new array, scaled in place) over sigma, after updating sigma with them."""
        ms = float(mean_square(per_example))
        self.mean_square = ms if self.mean_square == 0 else SCALE_DECAY * self.mean_square + (1 - SCALE_DECAY) * ms
        per_example *= 1.0 / self.sigma
        return per_example

    def scale_state(self) -> dict[str, np.ndarray]:
        """The running mean square of the targets, training state like the parameters (a fresh 0-d array)."""
        return {"mean_square": np.array(self.mean_square, np.float64)}

    def load_scale_state(self, saved: dict[str, np.ndarray]) -> None:
        self.mean_square = float(saved["mean_square"])

    def fit_grads(self, h: np.ndarray, y, target: np.ndarray):
        """(loss, grads) of M regressed on the normalised target; the loss is per element
        (0.5 = no better than predicting zero), so it reads the same for every task."""
        loss, grads = self.loss_and_grads(h, y, self.normalised_target(target))
        return loss / target.shape[1], grads

    def loss_and_grads(self, h: np.ndarray, y, target: np.ndarray):
        """Regression of M(h, y) onto its target: 0.5 * mean_rows ||M - target||^2; the grads of what M learns."""
        g, a = self._forward(h, y)
        err = np.subtract(g, target, out=g)
        n = len(h)
        loss = 0.5 * float(np.einsum("ij,ij->", err, err)) / n
        err /= n
        return loss, self._readout_grads(a, y, err)

    def _readout_grads(self, a: np.ndarray, y, err: np.ndarray) -> dict[str, np.ndarray]:
        """The gradients of what M learns, given the readout's input a and dLoss/dM = err."""
        grads = self._linear_grads(a, err)
        if "E" in self.learned:
            grads["E"] = per_class_sum(err, y, self.params["E"].shape[0])
        return grads


def per_class_sum(rows: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """out[c] = the sum of the rows whose label is c: one small GEMM with the labels' one-hot matrix
    (np.add.at, its loop over rows, took as long as a stage's forward at width 256)."""
    one_hot = np.zeros((n_classes, len(y)), rows.dtype)
    one_hot[y, np.arange(len(y))] = 1
    return (one_hot @ rows.reshape(len(y), -1)).reshape(n_classes, *rows.shape[1:])


def mean_square(x: np.ndarray) -> np.float64:
    """np.mean(np.square(x, dtype=np.float64)), bit for bit, without a float64 copy of all of x.

    numpy sums a contiguous array pairwise, halving it (each first half rounded down to a multiple
    of 8 elements) down to small blocks; this halves it the same way and squares a piece at a time.
    """
    flat = x.reshape(-1)
    return _sum_of_squares(flat) / flat.size


def _sum_of_squares(a: np.ndarray) -> np.float64:
    if len(a) <= PIECE_ELEMENTS:
        return np.add.reduce(np.square(a, dtype=np.float64))
    half = len(a) // 2 - len(a) // 2 % 8
    return _sum_of_squares(a[:half]) + _sum_of_squares(a[half:])


def add_rows(out: np.ndarray, table: np.ndarray, y: np.ndarray) -> None:
    """out += table[y], a few rows at a time: a conv M's class maps are as large as its output."""
    step = max(1, PIECE_BYTES // table[0].nbytes)
    for s in range(0, len(out), step):
        out[s:s + step] += table[y[s:s + step]]
