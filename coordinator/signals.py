"""SIGTERM and SIGINT to the coordinator: stop at the next barrier with a checkpoint; a second SIGINT stops at once."""
from __future__ import annotations

import signal
import threading
from pathlib import Path


class Interrupted(Exception):
    """The run stopped on a signal; `checkpoint` is the file it can resume from (None: there is none)."""

    def __init__(self, signum: int, step: int | None, checkpoint: Path | None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum   # what a shell reports for a process the signal killed: 143, 130


class StopSignals:
    """Truthy once SIGTERM or SIGINT arrived. The epoch loop checks it after every batch.

    Workers are not given a handler: under Slurm every task gets SIGTERM at once, and `dni slurm
    task` starts workers with SIGTERM ignored so that they live on until the coordinator's
    checkpoint is written and it stops them.
    """

    def __init__(self):
        self.signum = 0
        self.previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return bool(self.signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():   # signals reach only the main thread
            self.previous = {s: signal.signal(s, self.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def on_signal(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.signum:
            # Ctrl-C twice: the user will not wait for the checkpoint. Ignore any third while
            # the workers are being killed, so that none is left behind.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise KeyboardInterrupt
        self.signum = self.signum or signum
