"""Across machines: a SIGKILLed remote worker is replaced by a new `dni worker` on another host, and the run goes on."""
import json
import signal

from namespaced import FAST, NETWORK_LAB, coordinator, network, worker
from resumable import RESTART_SPREAD
from timing import HEARTBEAT, SCHEDULING_MARGIN_S, wait_for

from coordinator.cli import main
from protocol.keys import generate
from protocol.liveness import MISSED_HEARTBEATS, SWEEP_FRACTION

pytestmark = NETWORK_LAB


def outputs(*processes) -> str:
    """Each process's exit code (None: still running) and output, for a failure's message."""
    return "\n".join(f"--- exit {p.proc.poll()}:\n{p.text}" for p in processes)


def test_a_killed_remote_worker_is_replaced_from_another_host_and_the_run_completes(mnist, tmp_path):
    keys = generate(tmp_path / "keys", workers=3)
    run = tmp_path / "run"
    job = ["--data", str(mnist), "--hidden", "64,64", "--train-subset", "12000", "--epochs", "3", *FAST]
    assert main(["run", *job, "--out", str(tmp_path / "undisturbed")]) == 0
    with network(5) as (c, w1, w2, w3, spare):
        coord = coordinator(c, keys, 3, run, *job, "--log-every", "5", "--checkpoint-every", "20",
                            "--max-restarts", "1", "--rejoin-timeout", "60")
        workers = [worker(w, c, keys / f"worker-{k - 1}.key_secret", keys / "coordinator.key", "--stage", str(k))
                   for k, w in enumerate((w1, w2, w3), start=1)]
        metrics = run / "metrics.jsonl"
        assert wait_for(lambda: metrics.exists() and metrics.stat().st_size > 5000, 60), coord.text
        workers[1].proc.send_signal(signal.SIGKILL)
        # Named within three heartbeats; until then stage 2 is taken, and a newcomer would be refused.
        named = (MISSED_HEARTBEATS + SWEEP_FRACTION) * HEARTBEAT + SCHEDULING_MARGIN_S
        assert wait_for(lambda: "restart 1 of 1" in coord.text, named), coord.text
        # The same key on another host: CURVE admits it as it would any worker of the run.
        replacement = worker(spare, c, keys / "worker-1.key_secret", keys / "coordinator.key")
        assert coord.wait(120) == 0, outputs(coord, *workers, replacement)
        assert [workers[0].wait(), workers[2].wait(), replacement.wait()] == [0, 0, 0], replacement.text
        assert workers[1].wait() == -signal.SIGKILL
    lost = next(line for line in coord.lines if "restart 1 of 1" in line)
    assert lost.startswith("dni: stage 2 on ") and f"({w2.ip}, pid {workers[1].proc.pid}) lost" in lost, lost
    rejoined = [line for line in coord.lines if "rejoined" in line]
    assert len(rejoined) == 2 and all(f"({w.ip}," in "".join(rejoined) for w in (w1, w3)), rejoined
    after = coord.text.split(lost, 1)[1]
    assert "registered stage 2 on " in after and f"inbox tcp://{spare.ip}:" in after, after
    summary, undisturbed = (json.loads((d / "summary.json").read_text()) for d in (run, tmp_path / "undisturbed"))
    assert summary["restarts"] == 1
    assert summary["test_accuracy"] >= undisturbed["test_accuracy"] - RESTART_SPREAD, (summary, undisturbed)
