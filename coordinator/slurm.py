"""`dni slurm`: each process of a Slurm job finds its role and the coordinator from Slurm's environment."""
from __future__ import annotations

import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import fields
from importlib import resources
from pathlib import Path

from coordinator import config, plans, rundir
from protocol import keys

SCRIPT = "dni.sbatch"
# Several jobs may put their coordinators on one node: a port per job, from its id.
PORT_BASE, PORT_SPAN = 20000, 20000


class SlurmError(config.ConfigError):
    """Not inside a Slurm job step, or the allocation does not say what we need."""


def add_parser(sub) -> None:
    slurm = sub.add_parser("slurm", help="train on a Slurm allocation: submit the job script, or (inside the "
                           "job) prepare keys and start this task's coordinator or worker")
    actions = slurm.add_subparsers(dest="action", required=True)
    submit = actions.add_parser("submit", help="sbatch the job script with these training options")
    submit.add_argument("--nodes", type=int, help="nodes to allocate (default: one per stage)")
    submit.add_argument("--time", help="sbatch time limit, e.g. 2:00:00")
    submit.add_argument("--partition", help="sbatch partition")
    submit.add_argument("--requeue", action="store_true", help="let Slurm requeue the job; it resumes by itself")
    submit.add_argument("--wait", action="store_true", help="return when the job has ended, with its exit code")
    submit.add_argument("--sbatch", default="", metavar="ARGS",
                        help="further sbatch options, e.g. --sbatch='--account X --mem 4G'")
    script = actions.add_parser("script", help="write the job script (to edit, then sbatch it yourself)")
    script.add_argument("path", nargs="?", help="file to write (default: standard output)")
    prepare = actions.add_parser("prepare", help="(job script) fresh keys in the run directory; print the task count")
    task = actions.add_parser("task", help="(srun) become this task's `dni coordinator` or `dni worker`")
    for p in (submit, prepare, task):
        config.add_arguments(p)  # the training options of `dni coordinator`, passed on as given
        p.add_argument("--insecure", action="store_true", help="no CURVE keys: unencrypted, and anyone who "
                       "reaches the coordinator's port may join")
        p.add_argument("--port", type=int, help=f"coordinator port (default: {PORT_BASE} + job id mod {PORT_SPAN})")
    for p in (submit, script, prepare, task):
        p.set_defaults(func=globals()[f"cmd_{p.prog.split()[-1]}"])


def training(args) -> tuple[config.Config, list[str]]:
    """The training options, validated, and as flags for `dni coordinator` (but --out: see run_dir)."""
    given = ["--config", args.config] if args.config else []
    for f in fields(config.Config):
        value, flag = getattr(args, f.name), "--" + f.name.replace("_", "-")
        if value is None or f.name == "out":
            continue
        # str() of a float is its shortest exact repr: the coordinator parses back the same number.
        given += [flag if value else f"--no-{flag[2:]}"] if isinstance(value, bool) else [flag, str(value)]
    return config.from_args(args), given


def stages(cfg: config.Config) -> int:
    return len(plans.PLANS[cfg.model].roles_for(cfg))


def run_dir(cfg: config.Config, env=os.environ) -> Path:
    """--out, or runs/slurm-JOBID: a requeued job has the same id, so it finds its own checkpoint."""
    return Path(cfg.out or f"runs/slurm-{job_env('SLURM_JOB_ID', env)}").absolute()


def job_env(name: str, env=os.environ) -> str:
    if name not in env:
        raise SlurmError(f"${name} is not set: run this inside a Slurm job (sbatch {SCRIPT})")
    return env[name]


def job_number(name: str, env=os.environ, default: int | None = None) -> int:
    """A whole number Slurm's environment holds (`default` if the variable is unset and there is one)."""
    if default is not None and name not in env:
        return default
    value = job_env(name, env)
    if not value.isdecimal():
        raise SlurmError(f"${name} is {value!r}, not a whole number: is this a Slurm job's environment?")
    return int(value)


def cmd_prepare(args) -> int:
    cfg, _ = training(args)
    run = run_dir(cfg)
    run.mkdir(parents=True, exist_ok=True)
    # Not the keys of a run still going on (its coordinator holds the directory), nor through a link.
    with rundir.claimed(run, directories=("logs", "keys")):
        (run / "logs").mkdir(exist_ok=True)
        if not args.insecure:
            # A fresh keypair per process and attempt: a requeued job does not reuse the last one's.
            keys.remove(run / "keys")
            keys.generate(run / "keys", workers=stages(cfg))
    print(stages(cfg) + 1)  # the coordinator and one worker per stage: srun's task count
    return 0


def cmd_task(args) -> int:
    """Become task SLURM_PROCID: 0 the coordinator on the first node, K the worker of stage K."""
    cfg, given = training(args)
    run, n = run_dir(cfg), stages(cfg)
    rank, node = job_number("SLURM_PROCID"), job_env("SLURMD_NODENAME")
    port = args.port or PORT_BASE + job_number("SLURM_JOB_ID") % PORT_SPAN
    head = hostnames(job_env("SLURM_JOB_NODELIST"))[0]
    endpoint = f"tcp://{node_address(head)}:{port}"
    # -P: the job's working directory stays off sys.path (a user's concurrent.py would shadow the stdlib's).
    dni = [sys.executable, "-P", "-m", "coordinator", "-v"]
    if rank == 0:
        if node != head:
            raise SlurmError(f"task 0 runs on {node}, not the allocation's first node {head}: "
                             "srun needs --distribution cyclic (block also puts task 0 first)")
        security = ["--insecure"] if args.insecure else ["--keys", str(run / "keys")]
        argv = [*dni, "coordinator", "--bind", endpoint, "--workers", str(n), *security, *attempt(run), *given]
    elif rank <= n:
        secret = run / "keys" / f"worker-{rank - 1}.key_secret"
        security = ["--insecure"] if args.insecure else ["--key", str(secret), "--server-key",
                                                         str(run / "keys" / "coordinator.key")]
        argv = [*dni, "worker", "--coordinator", endpoint, "--stage", str(rank), *security]
        log = rundir.open_fd(run / "logs" / f"stage-{rank}-{node}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 1)
        os.dup2(log, 2)
        # scancel and the time limit signal every task at once; the coordinator needs its
        # workers to reach a checkpoint, and stops them itself (they also leave when it is gone).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        raise SlurmError(f"task {rank}: this network has {n} stages, so srun needs --ntasks {n + 1}")
    os.environ["PYTHONUNBUFFERED"] = "1"  # the job's output file shows progress as it happens
    print(f"slurm job {job_env('SLURM_JOB_ID')} task {rank} on {node}: dni {shlex.join(argv[4:])}", flush=True)
    os.execv(sys.executable, argv)  # the very command a user types on a host; Slurm signals it directly


def attempt(run: Path, env=os.environ) -> list[str]:
    """The coordinator's options for this attempt of the job in `run`."""
    # A checkpoint here means an earlier attempt of this run (requeued, or resubmitted by hand).
    if (run / "model.npz").exists():
        return ["--resume", str(run)]
    # Requeued before the last attempt wrote its first checkpoint: what that attempt left is the job's own
    # and of no use, so start afresh (a job resubmitted by hand is not the same job: it is refused).
    return ["--out", str(run), *["--overwrite"] * bool(job_number("SLURM_RESTART_COUNT", env, default=0))]


def hostnames(nodelist: str) -> list[str]:
    """Slurm's own expansion of a compressed node list (node[0-3])."""
    names = scontrol("show", "hostnames", nodelist).split()
    if not names:
        raise SlurmError(f"scontrol show hostnames {nodelist!r} printed no host name: is $SLURM_JOB_NODELIST "
                         "this job's?")
    return names


def node_address(name: str) -> str:
    """The IPv4 address Slurm reaches the node at: its NodeAddr, which need not be its name."""
    info = dict(f.split("=", 1) for f in scontrol("show", "node", name, "-o").split() if "=" in f)
    addr = info.get("NodeAddr", name)
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:  # a host name: resolve it, as the workers would
        try:
            return socket.getaddrinfo(addr, None, socket.AF_INET)[0][4][0]
        except (socket.gaierror, UnicodeError) as exc:
            raise SlurmError(f"node {name}: no IPv4 address for {addr!r} (scontrol show node gave no NodeAddr, "
                             f"or one that does not resolve): {exc}") from None


def scontrol(*argv: str) -> str:
    result = subprocess.run(["scontrol", *argv], capture_output=True, text=True, timeout=60)
    if result.returncode:   # its last line says why (the ones before, how it got there)
        why = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise SlurmError(f"scontrol {shlex.join(argv)}: {why}")
    return result.stdout


def script_path() -> Path:
    return Path(str(resources.files("coordinator") / SCRIPT))


def cmd_script(args) -> int:
    text = script_path().read_text()
    if args.path:
        Path(args.path).write_text(text)
        print(f"wrote {args.path}: sbatch --nodes N {args.path} --data DIR [training options]")
    else:
        sys.stdout.write(text)
    return 0


def cmd_submit(args) -> int:
    cfg, given = training(args)  # a typo fails here, not after the job waited in the queue
    n = stages(cfg)
    ours = ["--insecure"] * args.insecure + [f"--port={args.port}"] * bool(args.port)
    ours += ["--out", cfg.out] * bool(cfg.out)
    argv = ["sbatch", "--parsable", f"--nodes={args.nodes or n}", f"--ntasks={n + 1}"]
    argv += [f"--time={args.time}"] * bool(args.time) + [f"--partition={args.partition}"] * bool(args.partition)
    argv += ["--requeue"] * args.requeue + ["--wait"] * args.wait + shlex.split(args.sbatch)
    sbatch = subprocess.Popen([*argv, str(script_path()), *ours, *given], stdout=subprocess.PIPE, text=True)
    job = sbatch.stdout.readline().strip().split(";")[0]  # --parsable: "id" or "id;cluster", before --wait waits
    if job:
        where = cfg.out or f"runs/slurm-{job}"
        print(f"submitted job {job} ({n} stages on {args.nodes or n} nodes): progress in the job's output "
              f"(slurm-{job}.out unless --output), run directory {where}, worker logs {where}/logs/; "
              f"cancel with: scancel {job}", flush=True)
    return sbatch.wait()
