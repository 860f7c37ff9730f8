"""The random update schedule (--p-update): whether a stage updates on a batch, from its own seeded stream.

The paper's asynchrony test: each stage updates on each batch with probability p_update. The
stream is seeded from the run's seed and the stage index, so every run draws the same pattern;
its position (the batches decided so far) is training state, saved with every checkpoint, so a
resumed or restarted run goes on with the pattern an uninterrupted one had.
"""
from __future__ import annotations

import numpy as np

from workers.numerics.snapshot import counter

STREAM = 0x5052   # a third seed word: the update draws are a stream of their own, not the initialisation's


class UpdateDraws:
    """Decides, batch by batch, whether the stage updates; counts the batches it decided on."""

    def __init__(self, p: float, seed: int, index: int):
        self.p, self.key = p, (seed, index, STREAM)
        self.taken = 0       # training batches this stage has decided on (taken or skipped)
        self.rng = self._stream()

    def _stream(self) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(self.key))

    def next(self) -> bool:
        """Whether this stage updates on the batch it takes now; p 1 draws nothing (today's run, bit for bit)."""
        self.taken += 1
        return self.p == 1 or self.rng.random() < self.p

    def position(self, updates: int) -> int:
        """Where the layers' rate schedule stands once this update is made: the batches taken (the schedule
        spans the run's batches, updated or not); at p 1 that is the updates made, as it always was."""
        return updates if self.p == 1 else self.taken

    def state(self) -> dict[str, np.ndarray]:
        """The stream's position; nothing at p 1, whose checkpoints stay as they were."""
        return {} if self.p == 1 else {"update_draws": counter(self.taken)}

    def load_state(self, saved: dict[str, np.ndarray]) -> None:
        if self.p == 1:
            return
        self.taken = int(saved["update_draws"])
        # PCG64 draws one 64-bit word per double: advancing by the draws made puts the stream where it was.
        self.rng = self._stream()
        self.rng.bit_generator.advance(self.taken)
