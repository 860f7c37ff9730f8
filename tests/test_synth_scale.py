"""The synthesizer convention: per-example, normalised targets whose scale does not depend on batch size."""
import numpy as np

from workers.numerics.layers import Head
from workers.numerics.synthesizers import Synthesizer, add_rows, mean_square


def _mean_loss_gradient(batch: int) -> tuple[np.ndarray, np.ndarray]:
    """dL/dh of the batch-mean loss for the first `batch` rows of one fixed data set."""
    rng = np.random.default_rng(0)
    head = Head(16, 5, np.random.default_rng(1), dtype=np.float64)
    h, y = rng.standard_normal((256, 16)), rng.integers(0, 5, 256)
    return h[:batch], head.loss_and_grads(h[:batch], y[:batch])[3]


def test_target_scale_does_not_depend_on_batch_size():
    raw, normalised = {}, {}
    for batch in (32, 256):
        h, g = _mean_loss_gradient(batch)
        synth = Synthesizer(16, np.random.default_rng(2), dtype=np.float64)
        per_example = synth.normalised_target(g) * synth.sigma   # B * dL/dh, before normalising
        raw[batch] = float(np.sqrt(np.mean(g ** 2)))
        normalised[batch] = (float(np.sqrt(np.mean(per_example ** 2))),
                             float(np.sqrt(np.mean(synth.normalised_target(g) ** 2))))
    # the batch-mean gradient shrinks 8x from 32 to 256 rows; the synthesizer's targets do not
    assert 6 < raw[32] / raw[256] < 10
    assert 0.8 < normalised[32][0] / normalised[256][0] < 1.25
    assert all(abs(n[1] - 1) < 1e-6 for n in normalised.values())


def test_gradient_undoes_the_normalisation():
    """A synthesizer that predicts its normalised target exactly gives back the mean-loss gradient."""
    h, g = _mean_loss_gradient(64)
    synth = Synthesizer(16, np.random.default_rng(2), dtype=np.float64)
    t = synth.normalised_target(g)
    x = h / np.sqrt(np.mean(np.sum(h * h, axis=1)))   # M's normalised input
    synth.params["A"][:] = np.linalg.lstsq(x, t, rcond=None)[0]
    synth.params["c"][:] = 0
    fitted = x @ synth.params["A"]
    np.testing.assert_allclose(synth.predict(h), fitted)
    np.testing.assert_allclose(synth.gradient(h), fitted * synth.sigma / len(h))
    assert synth.fit_grads(h, None, g)[0] >= 0


def test_zero_prediction_reads_one_half():
    h, g = _mean_loss_gradient(128)
    synth = Synthesizer(16, np.random.default_rng(2), dtype=np.float64)
    loss, _ = synth.fit_grads(h, None, g)
    assert abs(loss - 0.5) < 1e-9
    assert not synth.gradient(h).any()


def test_float32_stays_float32_and_wire_buffers_are_not_written():
    h, g = _mean_loss_gradient(32)
    g32 = g.astype(np.float32)
    g32.setflags(write=False)
    synth = Synthesizer(16, np.random.default_rng(2))
    assert synth.normalised_target(g32).dtype == np.float32
    assert synth.gradient(h.astype(np.float32)).dtype == np.float32


def test_the_running_target_scale_is_saved_and_restored_with_the_stage():
    """sigma is training state: a resumed or restarted stage continues with the same scale."""
    from protocol.wireconfig import WireConfig
    from workers.numerics.snapshot import restore
    from workers.numerics.stage import Stage
    cfg = WireConfig(mode="dni", optimizer="adam", lr=1e-3, schedule="constant", total_steps=10, synth_lr=0.3,
                     synth_hidden=0, seed=0, log_every=1, cache=4, sizes=(16, 8, 5))
    h, g = _mean_loss_gradient(32)
    first, second = Stage(1, 16, 8, cfg), Stage(1, 16, 8, cfg)
    first.forward_and_keep(0, h.astype(np.float32), np.zeros(32, int))
    first.synthetic_gradient(0)
    first.update(0, np.zeros((32, 8), np.float32))
    first.inflight.fit(0, g[:, :8].astype(np.float32))
    saved = {k: np.array(v) for k, v in first.state().items()}
    assert saved["synth_scale.mean_square"] > 0
    restore(second, saved, "stage 1")
    assert second.inflight.synth.sigma == first.inflight.synth.sigma


def test_the_targets_mean_square_is_numpys_bit_for_bit_a_piece_at_a_time():
    rng = np.random.default_rng(3)
    for shape in [(128, 256), (128, 6272), (7, 100_003), (3, 1 << 17)]:
        x = (rng.standard_normal(shape) * 1e-3).astype(np.float32)
        assert mean_square(x) == np.mean(np.square(x, dtype=np.float64))


def test_class_rows_are_added_a_few_rows_at_a_time_as_all_at_once():
    rng = np.random.default_rng(4)
    table, y = rng.standard_normal((10, 300_000)).astype(np.float32), rng.integers(0, 10, 9)
    out = rng.standard_normal((9, 300_000)).astype(np.float32)
    whole = out + table[y]
    add_rows(out, table, y)
    assert np.array_equal(out, whole)
