"""A TCP relay that holds every chunk for a fixed one-way delay, bytes in order: link latency for the network bench.

This kernel has no netem, so the network bench puts one of these in front of every host: each
connection to the host is accepted here and re-made onward, and every chunk read from either side
is written to the other `delay` later, never sooner and never out of order. It is a test
instrument, not part of the trainer; the bench measures and reports its CPU (see `stats`).

    python -m coordinator.bench.netlab.relay --delay-ms 5 --forward 10.0.0.9:5555=10.0.0.1:5555 ...

prints `ready HOST:PORT ...` (the listening addresses, so a port 0 is told) and, on SIGTERM,
one JSON line of statistics before it exits.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import resource
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from typing import Callable

from coordinator.lists import parse

CHUNK = 256 * 1024
# Per direction. Past this the relay stops reading, so TCP's own flow control pushes back on
# the sender, as a real link's buffers would; at 20 ms it is far above what a run keeps in flight.
HELD_MAX = 32 * 1024 * 1024
TICK_MS = 200   # the longest poll: how soon a SIGTERM is acted on


class Direction:
    """The bytes one socket sends the other: a queue of (release time, chunk)."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay: float, stats: dict):
        self.src, self.dst, self.delay, self.stats = src, dst, delay, stats
        self.queue: deque[tuple[float, memoryview]] = deque()
        self.held = 0
        self.eof = self.shut = self.broken = False
        self.started = False   # the head chunk is partly sent (its lateness is counted once)

    def read(self) -> None:
        try:
            data = self.src.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        # The clock is read after recv returns, never before: recv takes whatever has arrived by the
        # time it runs, so a time taken earlier (say before a preemption) can predate the chunk's
        # last bytes, and they would be released that much before their delay was up.
        self.queue.append((time.monotonic() + self.delay, memoryview(data)))
        self.held += len(data)
        self.stats["bytes"] += len(data)
        self.stats["chunks"] += 1

    def write(self, now: float) -> bool:
        """Send what is due; False if the destination is full (wait for POLLOUT)."""
        while self.queue and self.queue[0][0] <= now:
            due, data = self.queue[0]
            if not self.started:
                late = now - due
                self.stats["late_s_sum"] += late
                self.stats["late_s_max"] = max(self.stats["late_s_max"], late)
                self.started = True
            try:
                n = self.dst.send(data)
            except BlockingIOError:
                return False
            except OSError:   # the destination reset or went away: nothing more can be delivered
                self.queue.clear()
                self.eof = self.shut = self.broken = True
                return True
            self.held -= n
            if n < len(data):
                self.queue[0] = (due, data[n:])
                return False
            self.queue.popleft()
            self.started = False
        if self.eof and not self.queue and not self.shut:
            self.shut = True
            try:
                self.dst.shutdown(socket.SHUT_WR)   # pass the end of the stream on, after its bytes
            except OSError:
                pass
        return True

    def next_due(self) -> float:
        return self.queue[0][0] if self.queue else math.inf

    def done(self) -> bool:
        return self.shut   # the end of the stream was passed on, after every byte before it


class Relay:
    """Listeners and their connections, in one poll loop."""

    def __init__(self, forwards: list[tuple[tuple[str, int], tuple[str, int]]], delay_s: float,
                 undelayed: set[str] = frozenset()):
        self.delay, self.undelayed = delay_s, set(undelayed)
        self.stats = {"delay_ms": delay_s * 1e3, "connections": 0, "refused": 0, "bytes": 0, "chunks": 0,
                      "late_s_sum": 0.0, "late_s_max": 0.0}
        self.poll = select.poll()
        self.listeners: dict[int, tuple[socket.socket, tuple[str, int]]] = {}
        self.pairs: dict[int, tuple[Direction, Direction]] = {}   # fd -> (its outgoing, its incoming)
        self.masks: dict[int, int] = {}
        for listen, target in forwards:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(listen)
            s.listen(64)
            self.listeners[s.fileno()] = (s, target)
            self.poll.register(s, select.POLLIN)
        self.stopping = False

    def addresses(self) -> list[str]:
        return [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s, _ in self.listeners.values()]

    def accept(self, listener: socket.socket, target: tuple[str, int]) -> None:
        conn, (peer, _) = listener.accept()
        try:
            out = socket.create_connection(target, timeout=5)
        except OSError:
            self.stats["refused"] += 1   # nothing listens behind us yet: the client will retry
            conn.close()
            return
        delay = 0.0 if peer in self.undelayed else self.delay
        for s in (conn, out):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # the delay is ours alone
        there, back = Direction(conn, out, delay, self.stats), Direction(out, conn, delay, self.stats)
        self.pairs[conn.fileno()], self.pairs[out.fileno()] = (there, back), (back, there)
        for s in (conn, out):
            self.masks[s.fileno()] = 0
            self.poll.register(s, 0)
        self.stats["connections"] += 1

    def close(self, fd: int) -> None:
        out, _ = self.pairs[fd]
        for sock in (out.src, out.dst):
            f = sock.fileno()
            self.pairs.pop(f, None)
            self.masks.pop(f, None)
            self.poll.unregister(f)
            sock.close()

    def step(self) -> None:
        now = time.monotonic()
        due = math.inf
        for fd, (out, into) in list(self.pairs.items()):
            if fd not in self.pairs:
                continue
            flowing = into.write(now)
            if (out.done() and into.done()) or out.broken or into.broken:
                self.close(fd)
                continue
            mask = (select.POLLIN if not out.eof and out.held < HELD_MAX else 0) | (0 if flowing else select.POLLOUT)
            if flowing:
                due = min(due, into.next_due())
            if mask != self.masks[fd]:
                self.poll.modify(fd, mask)
                self.masks[fd] = mask
        wait = TICK_MS if due == math.inf else min(TICK_MS, max(0, math.ceil((due - time.monotonic()) * 1e3)))
        for fd, event in self.poll.poll(wait):
            if fd in self.listeners:
                self.accept(*self.listeners[fd])
            elif fd in self.pairs:
                out, _ = self.pairs[fd]
                if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    out.read()

    def run(self) -> dict:
        while not self.stopping:
            self.step()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        s = self.stats
        return {**{k: s[k] for k in ("delay_ms", "connections", "refused", "bytes", "chunks")},
                "late_ms_mean": s["late_s_sum"] / max(s["chunks"], 1) * 1e3, "late_ms_max": s["late_s_max"] * 1e3,
                "cpu_s": usage.ru_utime + usage.ru_stime}


class Echo:
    """Sends back whatever arrives on `sock` (a listening socket, made in some host's stack), in a thread."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while data := conn.recv(CHUNK):
                    conn.sendall(data)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def ping(new_socket: Callable[[], socket.socket], to: tuple[str, int], count: int = 10,
         size: int = 64) -> list[float]:
    """Round trips of `size` bytes to an Echo at `to` over one TCP connection, in ms (the first,
    which pays for the connection's slow start, is left out); `new_socket()` makes one in the pinging host."""
    sock = connected(new_socket, to)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    with sock:
        for _ in range(count + 1):
            t0 = time.perf_counter()
            sock.sendall(b"p" * size)
            got = 0
            while got < size:
                chunk = sock.recv(size - got)
                if not chunk:
                    raise ConnectionError(f"the echo at {to[0]}:{to[1]} closed the connection")
                got += len(chunk)
            rtts.append((time.perf_counter() - t0) * 1e3)
    return rtts[1:]


def connected(new_socket: Callable[[], socket.socket], to: tuple[str, int], tries: int = 3) -> socket.socket:
    """A socket connected to `to`, trying again after "No route to host": a CI run on a loaded machine
    once failed a lab job on it, at the first connection between two namespaces made a moment before
    (the likely cause, an ARP request left unanswered, was not pinned down)."""
    for attempt in range(1, tries + 1):
        sock = new_socket()
        sock.settimeout(10)
        try:
            sock.connect(to)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EHOSTUNREACH or attempt == tries:
                raise


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m coordinator.bench.netlab.relay", description=__doc__.splitlines()[0])
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay added to every chunk")
    p.add_argument("--forward", action="append", required=True, metavar="LISTEN_IP:PORT=TARGET_IP:PORT")
    p.add_argument("--undelayed", default="", help="comma-separated peer addresses whose connections pass at once")
    args = p.parse_args(argv)
    forwards = [(address(a), address(b)) for a, b in (f.split("=", 1) for f in args.forward)]
    relay = Relay(forwards, args.delay_ms / 1e3, set(parse(args.undelayed, "--undelayed", str)))

    def stop(*_):
        relay.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", *relay.addresses(), flush=True)
    start = resource.getrusage(resource.RUSAGE_SELF)
    stats = relay.run()
    # What relaying cost, without the interpreter's start: that is not a cost of the link.
    stats["start_cpu_s"] = start.ru_utime + start.ru_stime
    stats["cpu_s"] -= stats["start_cpu_s"]
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
