"""A child process whose output lines a thread collects as they come, each with its arrival time."""
import subprocess
import threading
import time


class Watched:
    """proc's lines from stream (its stdout or stderr), read as they come so that a test can wait for one."""

    def __init__(self, proc: subprocess.Popen, stream):
        self.proc = proc
        self.timed: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.timed.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout: float = 120) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join(5)
        return rc

    @property
    def lines(self) -> list[str]:
        return [line for _, line in self.timed]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def saw(self, words: str) -> bool:
        return any(words in line for line in self.lines)

    def when(self, words: str) -> float | None:
        """When the first line with these words came (time.monotonic()), or None."""
        return next((t for t, line in self.timed if words in line), None)
