"""Worker processes start on their own entry point: no coordinator module, off the working directory, BLAS pinned."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from timing import wait_until

from coordinator import launch
from workers.runtime import blas

FAST = ["--no-progress", "--heartbeat", "0.5", "--checkpoint-every", "0"]
SMALL = ["--hidden", "16", "--train-subset", "640", "--epochs", "1", *FAST]   # two stages: a layer and the head


def imported(stderr: str) -> set[str]:
    """Every module a process imported, from its `-X importtime` report."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def coordinator_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "coordinator" or m.startswith("coordinator.")}


def test_workers_of_a_real_run_load_none_of_the_coordinator(tmp_path):
    """A local worker (`python -P -m workers`) and `dni worker` train a run without the coordinator's application."""
    endpoint = f"ipc://{tmp_path}/control"
    dni = [sys.executable, "-m", "coordinator"]
    coord = subprocess.Popen([*dni, "coordinator", "--bind", endpoint, "--workers", "2", *SMALL, "--out",
                              str(tmp_path / "run")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    commands = {"python -P -m workers": launch.worker_command(endpoint, "--stage", "1"),
                "dni worker": [*dni, "worker", "--coordinator", endpoint, "--stage", "2"]}
    env = {**blas.pinned(), "PYTHONPROFILEIMPORTTIME": "1"}
    workers = {name: subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
               for name, cmd in commands.items()}
    _, err = coord.communicate(timeout=120)
    reports = {name: w.communicate(timeout=30)[1] for name, w in workers.items()}
    assert coord.returncode == 0, err
    assert all(w.returncode == 0 for w in workers.values()), reports
    modules = {name: imported(report) for name, report in reports.items()}
    assert all({"workers.roles.worker", "workers.roles.layer", "numpy", "zmq"} <= m for m in modules.values())
    assert coordinator_modules(modules["python -P -m workers"]) == set()
    # `dni` is the coordinator's command: its entry point, and nothing behind it, decides it is a worker.
    assert coordinator_modules(modules["dni worker"]) == {"coordinator", "coordinator.entry"}


def test_dni_worker_is_the_entry_points_own_dispatch():
    """The installed `dni` script dispatches as `python -m coordinator` does, and `dni worker --help` answers."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["dni"] == "coordinator.entry:main"
    shown = subprocess.run([sys.executable, "-m", "coordinator", "worker", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--coordinator ENDPOINT" in shown.stdout and "--server-key" in shown.stdout
    refused = subprocess.run([sys.executable, "-m", "coordinator", "-v", "worker", "--coordinator", "tcp://127.0.0.1:9",
                              "--key", "worker-0.key_secret"], capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr == ("dni: error: --key and --server-key go together: this "
                                                          "worker's secret file and coordinator.key\n")


def test_a_concurrent_py_in_the_working_directory_does_not_break_dni_run(tmp_path):
    """Workers run with -P: a user's concurrent.py in the working directory would shadow the standard library's."""
    (tmp_path / "concurrent.py").write_text('raise RuntimeError("the user\'s concurrent.py was imported")\n')
    # -P stands in for the installed `dni` script, which puts its own directory on sys.path, not the cwd.
    run = subprocess.run([sys.executable, "-P", "-m", "coordinator", "run", *SMALL, "--out", str(tmp_path / "run")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "summary.json").is_file()


def worker_environment(tmp_path) -> dict[str, str]:
    """The environment of the worker process a local run starts (it waits for a coordinator that never comes)."""
    worker = launch.spawn_one(f"ipc://{tmp_path}/control", 1)
    try:
        # Until it has exec'd, the child's /proc files are the forked parent's (or empty).
        # (as launched, or titled once it runs: workers/runtime/proctitle.py)
        wait_until(lambda: b"worker" in Path(f"/proc/{worker.pid}/cmdline").read_bytes(), 10, "the exec", worker)
        raw = Path(f"/proc/{worker.pid}/environ").read_bytes()
    finally:
        launch.reap([worker], at_once=True)
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)


def test_dni_blas_threads_reaches_the_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")   # the parent's, e.g. a cluster's: workers must not inherit it
    monkeypatch.delenv("DNI_BLAS_THREADS", raising=False)
    assert {name: worker_environment(tmp_path)[name] for name in blas.VARIABLES} == {
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    monkeypatch.setenv("DNI_BLAS_THREADS", "2")
    assert {name: worker_environment(tmp_path)[name] for name in blas.VARIABLES} == {
        "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def test_a_niced_coordinators_workers_keep_its_nice_in_their_own_sessions(tmp_path):
    """Each local worker starts a session, which Linux (sched_autogroup) schedules as a group of its own whatever
    its processes' nice: the coordinator gives the group its nice, so `nice dni run` lowers the workers too."""
    if not Path("/proc/self/autogroup").exists():
        return   # a kernel without autogroups schedules by each process's nice, which the workers inherit
    spawn = ("import sys; from coordinator import launch; w = launch.spawn_one('ipc://" + str(tmp_path / "none")
             + "', 1); print(open(f'/proc/{w.pid}/autogroup').read(), flush=True); launch.reap([w], at_once=True)")
    out = subprocess.run(["nice", "-n", "7", sys.executable, "-c", spawn], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.split()[-1:] == [str(min(os.nice(0) + 7, 19))], out   # "/autogroup-N nice 7" (ours plus 7)
