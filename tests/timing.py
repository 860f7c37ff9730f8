"""Waiting in tests: polling for a condition, and the margin a timing bound allows beyond the code's own times."""
import time
from pathlib import Path

HEARTBEAT = 0.5   # the tests' runs beat faster than the default: failures are noticed sooner
FAST = ["--no-progress", "--heartbeat", str(HEARTBEAT)]
# A timing bound is the time the code itself defines (protocol/liveness.py, a test's --heartbeat)
# plus this: a process that lost the CPU for a while on a loaded 2-core machine, never more.
SCHEDULING_MARGIN_S = 1.0


def wait_for(condition, timeout: float = 10, every: float = 0.05) -> bool:
    """Poll until condition() holds (True) or timeout seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def wait_until(condition, timeout: float, what: str, proc=None, every: float = 0.02) -> None:
    """Poll until condition() holds; fail once timeout seconds have passed, or at once if process proc ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(every)


def training(run_dir: Path) -> bool:
    """The run in run_dir has logged its first step."""
    metrics = run_dir / "metrics.jsonl"
    return metrics.exists() and metrics.stat().st_size > 0
