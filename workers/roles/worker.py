"""`dni worker`: register with the coordinator, take the role it assigns, run it until told to stop."""
from __future__ import annotations

import logging
import os
import socket
import sys
from collections import Counter

import zmq
from zmq.utils.monitor import recv_monitor_message

from protocol import Kind, Message, ProtocolError, descriptors, liveness
from protocol.auth import HANDSHAKE_FAILED, Gate, handshake_failure, is_local
from protocol.kinds import MAX_FRAME_BYTES
from protocol.roles import BOX, HEAD, LAYER, PARAMS, title
from protocol.sockets import endpoint_fault, make_socket, recv, send, tcp_host
from workers.roles.box import TimeBoxWorker
from workers.roles.gpipe import GPipeHeadWorker, GPipeLayerWorker
from workers.roles.head import HeadWorker
from workers.roles.layer import LayerWorker
from workers.roles.params import ParamService
from workers.roles.pipedream import PipeDreamWorker
from workers.roles.role import CoordinatorLost, RoleFailed
from workers.roles.unlocked import UnlockedHeadWorker, UnlockedLayerWorker
from workers.runtime import proctitle

ROLES = {LAYER: LayerWorker, HEAD: HeadWorker, BOX: TimeBoxWorker, PARAMS: ParamService}
MODE_ROLES = {"gpipe": {LAYER: GPipeLayerWorker, HEAD: GPipeHeadWorker},   # modes whose stages have their own loop
              "pipedream": {LAYER: PipeDreamWorker}}
UNLOCKED_ROLES = {LAYER: UnlockedLayerWorker, HEAD: UnlockedHeadWorker}   # --synthetic-inputs, above stage 1
log = logging.getLogger("dni.worker")


class WorkerError(RuntimeError):
    """A reason to exit non-zero, said in one line."""


def route_address(host: str) -> str:
    """The local address this machine uses to reach `host` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(host), 9))
        return s.getsockname()[0]


def inbox_host(coordinator: str, advertise: str | None) -> str | None:
    """The address the data inbox listens on; None for ipc, next to the coordinator's socket."""
    if coordinator.startswith("ipc://"):
        return None
    return advertise or route_address(tcp_host(coordinator))


def bind_inbox(inbox: zmq.Socket, coordinator: str, host: str | None, generation: int = 0) -> str:
    """Bind the data inbox where neighbours can reach it; returns the endpoint to advertise.

    generation: how many times this worker rejoined; each inbox is new (see run)."""
    if host is None:
        path = os.path.join(os.path.dirname(coordinator[len("ipc://"):]), f"worker-{os.getpid()}")
        path += f"-{generation}" if generation else ""
        inbox.bind(f"ipc://{path}")
        return f"ipc://{path}"
    try:
        port = inbox.bind_to_random_port(f"tcp://{host}")
    except zmq.ZMQError as exc:
        raise WorkerError(f"cannot listen on {host} (--advertise, or this host's address towards the coordinator): "
                          f"{exc.strerror}") from None
    return f"tcp://{host}:{port}"


def register(control: zmq.Socket, monitor: zmq.Socket | None, endpoint: str, stage: int | None, timeout: float,
             curve_public: str) -> Message:
    """Say hello and wait for the assignment; `monitor` (first time only) reports handshakes the coordinator refused."""
    me = f"pid-{os.getpid()}"
    send(control, Message(Kind.HELLO, me, -1, {"endpoint": endpoint, "stage": stage, "host": socket.gethostname(),
                                               "pid": os.getpid(), "key": curve_public}))
    poller = zmq.Poller()
    poller.register(control, zmq.POLLIN)
    if monitor is not None:
        poller.register(monitor, zmq.POLLIN)
    # The coordinator answers once every worker has registered; it heartbeats meanwhile.
    while events := dict(poller.poll(int(timeout * 1000))):
        if monitor is not None and monitor in events:
            if why := handshake_failure(recv_monitor_message(monitor), bool(curve_public)):
                raise WorkerError(f"cannot join the coordinator: {why}")
        if control not in events:
            continue
        try:
            _, msg = recv(control)
        except ProtocolError as exc:
            raise WorkerError(f"coordinator sent a bad reply: {exc}") from None
        if msg.kind == Kind.REFUSE:
            raise WorkerError(f"coordinator refused registration: {msg.meta.get('reason')}")
        if msg.kind == Kind.ASSIGN:
            return msg
        if msg.kind == Kind.HEARTBEAT:
            send(control, Message(Kind.HEARTBEAT, me))  # still here, while the others register
        elif msg.kind == Kind.STOP:
            raise WorkerError("the coordinator stopped the run before it began")
    raise WorkerError(f"no answer from the coordinator within {timeout:.0f} s")


def run(coordinator: str, advertise: str | None = None, stage: int | None = None,
        timeout: float = liveness.WORKER_JOIN_TIMEOUT_S, curve: dict | None = None, insecure: bool = False) -> int:
    """Run one worker to completion; returns the process exit code.

    curve: {"own": (public, secret), "client": (public, secret, coordinator public)}: CURVE on
    the control connection and the data inbox, which admits only the run's members.
    """
    if why := endpoint_fault(coordinator):
        print(f"dni worker: error: --coordinator {why}", file=sys.stderr)
        return 2
    if advertise and endpoint_fault(f"tcp://{advertise}:1"):
        print(f"dni worker: error: --advertise {advertise!r} is not an IPv4 address or host name", file=sys.stderr)
        return 2
    try:
        host = inbox_host(coordinator, advertise)
    except OSError as exc:
        print(f"dni worker: error: cannot find a local address towards {coordinator}: {exc}", file=sys.stderr)
        return 2
    if curve is None and not insecure and host is not None and not is_local(f"tcp://{host}:0"):
        print(f"dni worker: error: the data inbox would listen on {host}, reachable from other hosts: give "
              "--key and --server-key, or --insecure to run unencrypted and open", file=sys.stderr)
        return 2
    descriptors.raise_limit()   # the inbox listens: room for strangers' connections besides the run's own
    ctx = zmq.Context()
    control = make_socket(ctx, zmq.DEALER, {"client": curve["client"]} if curve else None)
    monitor = control.get_monitor_socket(HANDSHAKE_FAILED)
    inbox = role = assign = None
    # One ZAP handler for the process's life: ZeroMQ frees its inproc name only once it has reaped the
    # handler's socket, so a handler made anew at a reset could find the name still taken.
    gate = Gate(ctx, log, "not a member of this run") if curve else None
    dropped = Counter()   # by the roles this worker dropped for a restart: its BYE still counts them
    try:
        control.connect(coordinator)
        generation = 0
        while True:
            # A fresh inbox each time round: whatever the old pipeline still had on its way
            # to this worker dies with the old socket, and cannot reach the restarted one.
            inbox = make_socket(ctx, zmq.PULL, {"server": curve["own"]} if curve else None)
            if gate is not None:
                gate.watch(inbox)
            endpoint = bind_inbox(inbox, coordinator, host, generation)
            proctitle.set_title(*proctitle.waiting(stage))
            assign = register(control, monitor, endpoint, stage, timeout, curve["own"][0].decode() if curve else "")
            if monitor is not None:
                control.disable_monitor()
                monitor.close(linger=0)
                monitor = None
            role = start_role(ctx, control, inbox, gate, assign, curve)
            proctitle.set_title(*assigned_title(assign.meta))
            role.drops.counts.update(dropped)
            role.log.info("%s on %s, inbox %s", assign.meta["role"], socket.gethostname(), endpoint)
            role.run()
            if not role.reset:
                return 0
            # A stage was lost: rejoin for the same stage, which only we may take.
            stage, generation, dropped = assign.meta["stage"], generation + 1, Counter(role.drops.counts)
            role.log.info("reset: rejoining for a restart from the last checkpoint")
            role = inbox = close(role, inbox)
            if gate is not None:
                gate.forget()   # the next assignment names the members
    except (WorkerError, RoleFailed) as exc:
        # Once assigned, the coordinator hears why (else it would only see the connection go).
        if assign is not None:
            give_up(control, role, str(exc))
        print(f"dni worker: {exc}", file=sys.stderr)
        return 1
    except CoordinatorLost as exc:
        print(f"dni worker: {title(assign.meta['role'], assign.meta['stage'])}: lost the coordinator at "
              f"{coordinator} ({exc}); exiting", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        close(role, inbox)
        if gate is not None:
            gate.close()
        if monitor is not None:
            monitor.close(linger=0)
        # Every socket of the context, the role's links to its neighbours too, even those of a
        # role whose setup failed half-way: term() would wait for them forever.
        ctx.destroy(linger=0)


def start_role(ctx, control, inbox, gate, assign: Message, curve):
    """The assigned role, built and (after a restart or on resume) loaded with its checkpointed state;
    WorkerError says in one line why it could not be."""
    if gate is not None:
        if not isinstance(assign.meta.get("members"), list):
            raise WorkerError("the coordinator's assignment names no members for the CURVE allowlist")
        gate.admit(assign.meta["members"])
    try:
        role = role_class(assign.meta)(ctx, control, inbox, assign, curve)
    except ProtocolError as exc:
        raise WorkerError(f"the coordinator's assignment cannot be used: {exc}") from None
    except (KeyError, ValueError, TypeError, IndexError, MemoryError) as exc:
        raise WorkerError(f"cannot build its {assign.meta.get('role')} role: {type(exc).__name__}: {exc}") from None
    try:
        if assign.arrays:
            role.load_state(dict(assign.arrays))
    except (ProtocolError, ValueError, KeyError) as exc:
        role.close()
        raise WorkerError(f"the coordinator's assignment cannot be used: {exc}") from None
    if why := oversized(role.state()):
        role.close()
        raise WorkerError(why)
    return role


def assigned_title(meta: dict) -> tuple[str, str]:
    """This process's names in ps once assigned (its config checked by the role): stage k of n, mode, run."""
    config = meta["config"]
    stages = config["boxes"] if config.get("model") == "rnn" else len(config["sizes"]) - 1
    return proctitle.assigned(meta["role"], meta["stage"], stages, config.get("mode", ""), meta.get("run", ""))


def role_class(meta: dict) -> type:
    """The loop of the assigned role, under the run's mode."""
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    if config.get("synthetic_inputs") is True and meta["stage"] > 1:
        return UNLOCKED_ROLES[meta["role"]]
    return MODE_ROLES.get(config.get("mode"), {}).get(meta["role"]) or ROLES[meta["role"]]


def oversized(state: dict) -> str:
    """Why a state cannot travel ("" if it can): each array goes in one frame, and a peer drops the
    connection of a frame over the limit, so a checkpoint or a restart of this stage would fail mid-run."""
    for name, a in state.items():
        if a.nbytes > MAX_FRAME_BYTES:
            return (f"its {name} ({' x '.join(map(str, a.shape))} {a.dtype}, {a.nbytes / 2**20:.1f} MiB) is larger "
                    f"than the message limit ({MAX_FRAME_BYTES / 2**20:.0f} MiB): make the network smaller")
    return ""


def give_up(control: zmq.Socket, role, error: str) -> None:
    """Tell the coordinator why this worker stops, and give the message a moment to leave."""
    meta = role.goodbye(error) if role is not None else {"time_s": {}, "error": error}
    try:
        send(control, Message(Kind.BYE, role.name if role is not None else "worker", -1, meta), block=False)
        control.close(linger=int(liveness.FAIL_LINGER_S * 1000))
    except zmq.ZMQError:
        pass


def close(role, inbox) -> None:
    if role is not None:
        role.close()
    if inbox is not None:
        inbox.close(linger=0)
