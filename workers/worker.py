"""`dni worker`: register with the coordinator, take the role it assigns, run it until told to stop."""
from __future__ import annotations

import logging
import os
import socket
import sys
from urllib.parse import urlsplit

import zmq

from protocol import Kind, Message, ProtocolError
from workers.head_worker import HeadWorker
from workers.layer_worker import LayerWorker
from workers.role import CoordinatorLost
from workers.transport import make_socket, recv, send

ROLES = {"layer": LayerWorker, "head": HeadWorker}
log = logging.getLogger("dni.worker")


class WorkerError(RuntimeError):
    """A reason to exit non-zero, said in one line."""


def route_address(host: str) -> str:
    """The local address this machine uses to reach `host` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(host), 9))
        return s.getsockname()[0]


def bind_inbox(inbox: zmq.Socket, coordinator: str, advertise: str | None) -> str:
    """Bind the data inbox where neighbours can reach it; returns the endpoint to advertise."""
    if coordinator.startswith("ipc://"):
        path = os.path.join(os.path.dirname(coordinator[len("ipc://"):]), f"worker-{os.getpid()}")
        inbox.bind(f"ipc://{path}")
        return f"ipc://{path}"
    host = advertise or route_address(urlsplit(coordinator).hostname)
    port = inbox.bind_to_random_port(f"tcp://{host}")
    return f"tcp://{host}:{port}"


def register(control: zmq.Socket, endpoint: str, stage: int | None, timeout: float, curve_public: str) -> Message:
    send(control, Message(Kind.HELLO, f"pid-{os.getpid()}", -1,
                          {"endpoint": endpoint, "stage": stage, "host": socket.gethostname(),
                           "pid": os.getpid(), "key": curve_public}))
    # The coordinator answers once every worker has registered; it heartbeats meanwhile.
    while control.poll(int(timeout * 1000)):
        try:
            _, msg = recv(control)
        except ProtocolError as exc:
            raise WorkerError(f"coordinator sent a bad reply: {exc}") from None
        if msg.kind == Kind.REFUSE:
            raise WorkerError(f"coordinator refused registration: {msg.meta.get('reason')}")
        if msg.kind == Kind.ASSIGN:
            return msg
    raise WorkerError(f"no answer from the coordinator within {timeout:.0f} s")


def run(coordinator: str, advertise: str | None = None, stage: int | None = None,
        timeout: float = 30.0, curve: dict | None = None) -> int:
    """Run one worker to completion; returns the process exit code."""
    ctx = zmq.Context()
    control = make_socket(ctx, zmq.DEALER, {"client": curve["client"]} if curve else None)
    inbox = make_socket(ctx, zmq.PULL, {"server": curve["own"]} if curve else None)
    role = None
    try:
        control.connect(coordinator)
        endpoint = bind_inbox(inbox, coordinator, advertise)
        assign = register(control, endpoint, stage, timeout, curve["own"][0].decode() if curve else "")
        role = ROLES[assign.meta["role"]](ctx, control, inbox, assign, curve)
        role.log.info("%s on %s, inbox %s", assign.meta["role"], socket.gethostname(), endpoint)
        role.run()
        return 0
    except (WorkerError, CoordinatorLost) as exc:
        print(f"dni worker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if role is not None:
            role.close()
        control.close(linger=0)
        inbox.close(linger=0)
        ctx.term()
