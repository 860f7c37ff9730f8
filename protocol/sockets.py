"""The one comm layer: sockets with the project's options, and send/recv of protocol messages."""
from __future__ import annotations

import os

import zmq

from protocol import Message, ProtocolError, decode, encode
from protocol.kinds import MAX_FRAME_BYTES

# Explicit high-water marks: the credit window bounds what is in flight; these bound the
# queues only as a backstop so a runaway peer cannot fill memory.
HWM = 1000


def make_socket(ctx: zmq.Context, kind: int, curve: dict | None = None) -> zmq.Socket:
    """A socket with the project's options; curve = {"server": (pub, sec)} or {"client": (pub, sec, server_pub)}."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    if kind == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable sends raise instead of vanishing
    # An ipc listener admits only processes of this user: abstract-namespace endpoints
    # (ipc://@name) have no file whose mode could say so. No effect on tcp.
    sock.setsockopt(zmq.IPC_FILTER_UID, os.getuid())
    if curve and "server" in curve:
        sock.curve_publickey, sock.curve_secretkey = curve["server"]
        sock.curve_server = True
    elif curve and "client" in curve:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = curve["client"]
    return sock


def endpoint_fault(endpoint: str) -> str | None:
    """What is wrong with an endpoint to connect to (None: nothing): tcp://HOST:PORT or ipc://PATH."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc"):
        return f"{endpoint!r} is not an endpoint like tcp://HOST:PORT or ipc://PATH"
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return f"{endpoint!r} lacks a host or a port (tcp://HOST:PORT)"
        return ipv6_fault(endpoint)
    elif not rest:
        return f"{endpoint!r} lacks a path"
    return None


def ipv6_fault(endpoint: str) -> str | None:
    """An IPv6 tcp endpoint, to connect to or to bind, said in one line (None: not one)."""
    # Every socket and address here is IPv4 (no ZMQ_IPV6, AF_INET lookups): say so rather than fail later.
    if endpoint.startswith("tcp://") and any(c in tcp_host(endpoint) for c in ":[]"):
        return f"{endpoint!r}: IPv6 endpoints are not supported; give an IPv4 address or a host name"
    return None


def tcp_host(endpoint: str) -> str:
    """The HOST of tcp://HOST:PORT, read as endpoint_fault reads it."""
    return endpoint.partition("://")[2].rpartition(":")[0]


# Frame by frame rather than send_multipart/recv_multipart: those type-check every part
# and ask the socket for RCVMORE after each frame, Python-level calls that cost ~25 µs per
# round trip in a live loop (measured: `dni bench transport`). A frame's own `more` flag
# says the same thing for free.
def send(sock: zmq.Socket, msg: Message, identity: bytes | None = None, block: bool = True) -> None:
    """block=False: zmq.Again at once if the peer's queue is full (a peer that does not read),
    rather than wait; the rest of a message follows its first frame atomically."""
    frames = encode(msg)
    first = 0 if block else zmq.NOBLOCK
    if identity is not None:
        sock.send(identity, zmq.SNDMORE | first)
        first = 0
    last = frames.pop()
    for frame in frames:
        sock.send(frame, zmq.SNDMORE | first, copy=False)
        first = 0
    sock.send(last, first, copy=False)


def recv(sock: zmq.Socket, router: bool = False, keyed: bool = False) -> tuple[bytes | None, Message]:
    """Receive and decode one message; a ROUTER's first frame is the peer id.

    keyed (a CURVE server): the message's `peer` is the key its connection authenticated with
    (ZAP's User-Id), which unlike `src` the sender cannot choose. A ProtocolError carries the
    ROUTER peer id as `identity`, so the receiver can answer it (a version mismatch).
    """
    frame = sock.recv(copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(copy=False)
        frames.append(frame)
    identity = None
    if router:
        identity = frames.pop(0).bytes
    try:
        msg = decode(frames)
    except ProtocolError as exc:
        exc.identity = identity
        raise
    if keyed:
        msg.peer = frames[0].get("User-Id")
    return identity, msg
