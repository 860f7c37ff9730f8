"""Remote workers joining a `dni coordinator` one by one: those waiting stay alive, one that leaves is replaced."""
import subprocess
import sys
import time

from namespaced import FAST
from timing import HEARTBEAT, wait_for
from watched import Watched

from coordinator import launch
from protocol.liveness import MISSED_HEARTBEATS


def test_registered_workers_stay_alive_while_the_others_take_their_time(tmp_path):
    """A worker waiting for its assignment answers heartbeats: people start hosts one by one."""
    endpoint = f"ipc://{tmp_path}/control"
    coord = subprocess.Popen([sys.executable, "-m", "coordinator", "coordinator", "--bind", endpoint,
                              "--workers", "2", "--hidden", "16", "--train-subset", "640", "--epochs", "1",
                              "--out", str(tmp_path / "run"), *FAST],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen(launch.worker_command(endpoint))
    time.sleep(2 * MISSED_HEARTBEATS * HEARTBEAT)  # twice as long as it takes to declare a silent worker dead
    second = subprocess.Popen(launch.worker_command(endpoint))
    _, err = coord.communicate(timeout=60)
    assert coord.returncode == 0, err
    assert first.wait(10) == 0 and second.wait(10) == 0


def test_a_worker_that_leaves_before_the_run_begins_is_replaced(tmp_path):
    """Until roles are assigned, a remote worker that dies frees its place instead of ending the run."""
    endpoint = f"ipc://{tmp_path}/control"
    coord = subprocess.Popen([sys.executable, "-m", "coordinator", "-v", "coordinator", "--bind", endpoint,
                              "--workers", "3", "--hidden", "16,16", "--train-subset", "640", "--epochs", "1",
                              "--out", str(tmp_path / "run"), *FAST],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = Watched(coord, coord.stdout)
    procs = [coord] + [subprocess.Popen(launch.worker_command(endpoint, "--stage", k)) for k in ("1", "2")]
    stays, doomed = procs[1:]
    try:
        # Two of three registered: the run waits for the third, so stage 2 may still leave.
        assert wait_for(lambda: said.text.count("registered stage") == 2, 30), said.text
        doomed.kill()
        doomed.wait()
        assert wait_for(lambda: said.saw("its place is free"), 30), said.text
        procs += [subprocess.Popen(launch.worker_command(endpoint, "--stage", k)) for k in ("2", "3")]
        assert said.wait(60) == 0, said.text
        assert all(p.wait(10) == 0 for p in (stays, *procs[3:]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    dropped = next(line for line in said.lines if "its place is free" in line)
    # Killed, its connection closes (or, across hosts, its heartbeats stop): either way it is named.
    assert "stage 2" in dropped and ("connection closed" in dropped or "no heartbeat" in dropped), dropped
    assert said.text.count("registered stage 2") == 2   # the doomed worker, then its replacement
