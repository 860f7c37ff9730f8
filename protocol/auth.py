"""CURVE admission: pyzmq's ZAP authenticator admitting listed public keys, and plain words for failed handshakes.

The Gate is pyzmq's ThreadAuthenticator with a CURVE callback, plus two things it lacks:
the allowlist may arrive after the guarded socket is bound (a worker binds its inbox before
it learns the run's members: until then handshakes wait instead of failing), and refusals
are logged, rate-limited, with the peer's address (the callback alone is not given it). With a socket
to watch, it also bounds the connections that socket holds: each takes a descriptor, key or none."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from protocol import descriptors

HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_TICK_S = 0.1         # how often a waiting handshake and the watch thread look at the stop flag
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


class Gate(ThreadAuthenticator):
    """The ZAP handler of one context: admits CURVE clients whose public key is listed, logs refusals.

    With `watch`, it also logs that socket's failed handshakes that never reach ZAP (a peer
    without CURVE, or holding the wrong server key), and hangs up on connections beyond the
    descriptors the process can spare (descriptors.connection_budget): a stranger's connection
    that never sends a byte holds one until the handshake times out, and enough of them would
    leave none for the next checkpoint. Refused peers may retry every 100 ms, so a refusal like
    one logged in the last second goes to debug level only.
    """

    def __init__(self, ctx: zmq.Context, log: logging.Logger, why_not: str,
                 keys=None, watch: zmq.Socket | None = None):
        super().__init__(ctx, log=logging.getLogger("zmq.auth"))
        self.gate_log, self.why_not = log, why_not
        self._keys: frozenset[bytes] | None = None
        self._address = ""                      # of the request being answered (one at a time)
        self._logged: dict[tuple, float] = {}   # refusal -> when it was last logged
        self._closing = threading.Event()
        if keys is not None:
            self.admit(keys)
        # Started here, before the caller binds the guarded socket: a CURVE server in a context
        # without a ZAP handler admits every client.
        self.start()
        self.configure_curve_callback("*", credentials_provider=self)
        self._watching: tuple[threading.Thread, threading.Event] | None = None
        self._watches = 0
        self._open: set[int] = set()   # descriptors of the watched socket's connections
        self.budget = descriptors.connection_budget()
        if watch is not None:
            self.watch(watch)

    def admit(self, keys) -> None:
        """Admit exactly these Z85 public keys from now on."""
        self._keys = frozenset(k.encode() if isinstance(k, str) else bytes(k) for k in keys)

    def forget(self) -> None:
        """Hold handshakes again until the next admit() (a worker between two assignments)."""
        self._keys = None

    def watch(self, sock: zmq.Socket) -> None:
        """Watch this socket from now on instead of the one watched so far (a worker's fresh inbox after a reset)."""
        self.unwatch()
        self._open, self._watches = set(), self._watches + 1
        # A name of our own: the default one holds the socket's descriptor number, which a socket closed
        # just before may have had, and ZeroMQ frees an inproc name only once it has reaped its socket.
        monitor = sock.get_monitor_socket(HANDSHAKE_FAILED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED,
                                          addr=f"inproc://gate-{id(self)}-watch-{self._watches}")
        done = threading.Event()
        thread = threading.Thread(target=self._watched, args=(monitor, done), name="zap-watch", daemon=True)
        self._watching = (thread, done)
        thread.start()

    def unwatch(self) -> None:
        if self._watching is not None:
            thread, done = self._watching
            done.set()
            thread.join()
            self._watching = None

    def close(self) -> None:
        self._closing.set()
        self.stop()
        self.unwatch()

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        if len(msg) > 3:
            self._address = msg[3].decode(errors="replace")
        await super().handle_zap_message(msg)

    async def callback(self, domain: str, key: bytes) -> bool:
        """ThreadAuthenticator's CURVE check; holds the handshake until the allowlist is known."""
        while self._keys is None and not self._closing.is_set():
            await asyncio.sleep(_TICK_S)
        if self._keys is not None and key in self._keys:
            return True
        self._note(("zap", self._address, key), "refused a connection from %s: key %s is %s",
                   self._address, abbreviate(key), self.why_not)
        return False

    def _watched(self, monitor: zmq.Socket, done: threading.Event) -> None:
        try:
            while not done.is_set():
                if not monitor.poll(int(_TICK_S * 1000)):
                    continue
                event = recv_monitor_message(monitor)
                if event["event"] in (zmq.EVENT_ACCEPTED, zmq.EVENT_DISCONNECTED):
                    self._count(event)
                    continue
                why = handshake_failure(event)
                if why is None or event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                    continue  # refusals by key were logged, with the peer's address, when ZAP answered
                self._note(("handshake", event["event"], int(event["value"])), "refused a connection on %s: %s",
                           event["endpoint"].decode(errors="replace"), why)
        finally:
            monitor.close(linger=0)

    def _count(self, event: dict) -> None:
        fd = int(event["value"])
        if event["event"] == zmq.EVENT_DISCONNECTED:
            self._open.discard(fd)
        elif len(self._open) < self.budget:
            self._open.add(fd)
        else:
            # Events come in order, and ZeroMQ reports a connection's end before it closes the descriptor:
            # this number is still the connection just accepted (or, at worst, one accepted after it).
            descriptors.hang_up(fd)
            self._note(("full",), "refused a connection on %s: %d connections open already, all this "
                       "process can spare", event["endpoint"].decode(errors="replace"), self.budget)

    def _note(self, what: tuple, fmt: str, *args) -> None:
        now = time.monotonic()
        if now - self._logged.get(what, -_QUIET_S) < _QUIET_S:
            self.gate_log.debug(fmt, *args)
            return
        if len(self._logged) >= _MAX_REMEMBERED:
            self._logged.clear()
        self._logged[what] = now
        self.gate_log.warning(fmt, *args)
