"""CURVE admission: a ZAP handler admitting listed public keys only, and plain words for failed handshakes."""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

ZAP_ENDPOINT = "inproc://zeromq.zap.01"   # fixed by ZAP (RFC 27): one handler per context
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_TICK_MS = 100        # how often the gate's thread looks at its stop flag
_QUIET_S = 1.0        # a refusal like one logged less than this long ago is logged at debug level
_MAX_REMEMBERED = 256


def abbreviate(key: bytes | str) -> str:
    """The first 8 characters of a Z85 *public* key: enough to tell keys apart in a log."""
    return (key.decode() if isinstance(key, bytes) else key)[:8] + "..."


def is_local(endpoint: str) -> bool:
    """True for ipc/inproc, and tcp on addresses that are all loopback; False if others may reach it."""
    if endpoint.split("://", 1)[0] in ("ipc", "inproc"):
        return True
    try:
        host = urlsplit(endpoint).hostname
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)} if host else set()
    except (socket.gaierror, UnicodeError, ValueError):
        return False  # "*", an interface name, anything unresolvable: assume it is reachable
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def handshake_failure(event: dict, curve: bool = True) -> str | None:
    """Plain words for a monitor event of a failed ZMTP handshake (None for any other event).

    `curve`: whether this side uses CURVE, which decides the likely cause of a dropped handshake.
    """
    kind, value = event["event"], int(event["value"])
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"the key was refused (ZAP status {value}): it is not on the coordinator's allowlist"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "one side uses CURVE keys and the other does not (check --keys/--key/--insecure)"
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return "a CURVE handshake did not decrypt (a client holding the wrong server key?)"
        return f"handshake protocol error {value:#x}"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        if curve:
            return "the connection was dropped during the CURVE handshake (is --server-key the coordinator's key?)"
        return "the connection was dropped during the handshake (does the coordinator need --key and --server-key?)"
    return None


class Gate:
    """The ZAP handler of one context: admits CURVE clients whose public key is listed, logs refusals.

    Until `admit` gives the list, requests stay queued and their handshakes wait: a worker
    binds its inbox before it learns the run's members, and a neighbour may connect first.
    With `watch`, it also logs that socket's failed handshakes that never reach ZAP (a peer
    without CURVE, or holding the wrong server key). Refused peers may retry every 100 ms, so
    a refusal like one logged in the last second goes to debug level only.
    """

    def __init__(self, ctx: zmq.Context, log: logging.Logger, why_not: str,
                 keys=None, watch: zmq.Socket | None = None):
        self.log, self.why_not = log, why_not
        self._keys: frozenset[bytes] | None = None
        self._logged: dict[tuple, float] = {}   # refusal -> when it was last logged
        self._stop = threading.Event()
        # Bound here, before the caller binds the guarded socket: a CURVE server in a context
        # without a ZAP handler admits every client.
        self._zap = ctx.socket(zmq.REP)
        self._zap.linger = 0
        self._zap.bind(ZAP_ENDPOINT)
        self._monitor = watch.get_monitor_socket(HANDSHAKE_FAILED) if watch is not None else None
        if keys is not None:
            self.admit(keys)
        self._thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self._thread.start()

    def admit(self, keys) -> None:
        """Admit exactly these Z85 public keys from now on."""
        self._keys = frozenset(k.encode() if isinstance(k, str) else bytes(k) for k in keys)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _serve(self) -> None:
        poller = zmq.Poller()
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        answering = False
        try:
            while not self._stop.is_set():
                if not answering and self._keys is not None:
                    poller.register(self._zap, zmq.POLLIN)
                    answering = True
                for sock, _ in poller.poll(_TICK_MS):
                    if sock is self._zap:
                        self._answer(self._zap.recv_multipart())
                    else:
                        self._watched(recv_monitor_message(self._monitor))
        finally:
            self._zap.close(linger=0)
            if self._monitor is not None:
                self._monitor.close(linger=0)

    def _answer(self, request: list[bytes]) -> None:
        # libzmq itself writes these requests: version, id, domain, address, identity, mechanism, credentials.
        version, request_id, _, address, _, mechanism, *credentials = request
        key = z85.encode(credentials[0]) if mechanism == b"CURVE" and len(credentials) == 1 else None
        if key is not None and key in self._keys:
            # The user id becomes the "User-Id" property of every message on this connection.
            self._zap.send_multipart([version, request_id, b"200", b"OK", key, b""])
            return
        who = f"key {abbreviate(key)}" if key is not None else f"mechanism {mechanism.decode(errors='replace')}"
        self._note(("zap", address, key), "refused a connection from %s: %s is %s",
                   address.decode(errors="replace"), who, self.why_not)
        self._zap.send_multipart([version, request_id, b"400", self.why_not.encode(), b"", b""])

    def _watched(self, event: dict) -> None:
        why = handshake_failure(event)
        if why is None or event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return  # refusals by key were logged, with the peer's address, when ZAP answered
        self._note(("handshake", event["event"], int(event["value"])), "refused a connection on %s: %s",
                   event["endpoint"].decode(errors="replace"), why)

    def _note(self, what: tuple, fmt: str, *args) -> None:
        now = time.monotonic()
        if now - self._logged.get(what, -_QUIET_S) < _QUIET_S:
            self.log.debug(fmt, *args)
            return
        if len(self._logged) >= _MAX_REMEMBERED:
            self._logged.clear()
        self._logged[what] = now
        self.log.warning(fmt, *args)
