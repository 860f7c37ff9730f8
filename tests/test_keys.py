"""Tests for protocol.keys and `dni keys generate`: file layout and modes, loading, and a real CURVE handshake."""

import logging
import os
import stat
import subprocess
import sys
import time

import pytest
import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from coordinator.cli import main
from protocol.auth import Gate
from protocol.keys import KeyFileError, allowed_workers, generate, load_client, load_public, load_server, remove
from protocol.sockets import make_socket

TIMEOUT_MS = 5000


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_and_modes(tmp_path):
    keys = generate(tmp_path / "keys", workers=2)
    assert keys == tmp_path / "keys"
    assert mode(keys) == 0o700 and mode(keys / "workers") == 0o700
    for secret in ("coordinator.key_secret", "worker-0.key_secret", "worker-1.key_secret"):
        assert mode(keys / secret) == 0o600, secret
    assert sorted(p.name for p in (keys / "workers").iterdir()) == ["worker-0.key", "worker-1.key"]
    # Public files carry no secret, so they can be handed out freely.
    for public in (keys / "coordinator.key", *(keys / "workers").iterdir()):
        assert "secret-key" not in public.read_text()


def test_round_trip(tmp_path):
    keys = generate(tmp_path, workers=3)
    server_public, server_secret = load_server(keys)
    assert len(server_public) == len(server_secret) == 40
    assert zmq.curve_public(server_secret) == server_public
    assert load_public(keys / "coordinator.key") == server_public

    clients = [load_client(keys / f"worker-{i}.key_secret") for i in range(3)]
    assert allowed_workers(keys) == [public for public, _ in clients]
    assert len({server_public, *(public for public, _ in clients)}) == 4


def test_refuses_to_overwrite(tmp_path):
    generate(tmp_path, workers=1)
    before = (tmp_path / "coordinator.key_secret").read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        generate(tmp_path, workers=1)
    assert (tmp_path / "coordinator.key_secret").read_bytes() == before


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(KeyFileError, match="coordinator.key_secret"):
        load_server(tmp_path)
    with pytest.raises(KeyFileError, match="worker-7.key_secret"):
        load_client(tmp_path / "worker-7.key_secret")
    with pytest.raises(KeyFileError, match="allowlist directory is missing"):
        allowed_workers(tmp_path)
    (tmp_path / "workers").mkdir()
    with pytest.raises(KeyFileError, match="no worker public keys"):
        allowed_workers(tmp_path)


def test_corrupt_files_are_errors_without_secrets(tmp_path):
    keys = generate(tmp_path, workers=1)
    secret_file = keys / "worker-0.key_secret"
    _, secret = load_client(secret_file)

    secret_file.write_text(secret_file.read_text().replace(secret.decode(), secret.decode()[:-3]))
    with pytest.raises(KeyFileError, match="corrupt secret key") as err:
        load_client(secret_file)
    assert secret.decode()[:20] not in str(err.value)

    _, other_secret = zmq.curve_keypair()
    secret_file.write_text(f'curve\n    public-key = "{load_public(keys / "coordinator.key").decode()}"\n'
                           f'    secret-key = "{other_secret.decode()}"\n')
    with pytest.raises(KeyFileError, match="does not match") as err:
        load_client(secret_file)
    assert other_secret.decode()[:20] not in str(err.value)

    secret_file.write_text("garbage\n")
    with pytest.raises(KeyFileError, match="not a ZeroMQ certificate"):
        load_client(secret_file)

    public_only = keys / "coordinator.key"
    public_only.chmod(0o600)
    with pytest.raises(KeyFileError, match="no secret key"):
        load_client(public_only)


def test_readable_secret_is_refused(tmp_path):
    keys = generate(tmp_path, workers=1)
    (keys / "worker-0.key_secret").chmod(0o644)
    with pytest.raises(KeyFileError, match="mode 0644"):
        load_client(keys / "worker-0.key_secret")


class Allowlist:
    """ThreadAuthenticator credentials provider admitting exactly the given public keys."""

    def __init__(self, keys):
        self.keys = set(keys)

    def callback(self, domain, key):
        return key in self.keys


def test_curve_handshake_admits_only_listed_workers(tmp_path):
    keys = generate(tmp_path, workers=2)
    server_public, server_secret = load_server(keys)
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    sockets = []

    def socket(kind, public, secret, server_key=None):
        s = ctx.socket(kind)
        s.linger = 0
        s.curve_publickey, s.curve_secretkey = public, secret
        if server_key is None:
            s.curve_server = True
        else:
            s.curve_serverkey = server_key
        sockets.append(s)
        return s

    try:
        auth.start()
        auth.configure_curve_callback("*", Allowlist(allowed_workers(keys)))
        server = socket(zmq.PULL, server_public, server_secret)
        port = server.bind_to_random_port("tcp://127.0.0.1")
        monitor = server.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        sockets.append(monitor)

        def wait_for(event):
            # Skip stale events, e.g. the intruder's automatic reconnect attempts failing again.
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            while (left_ms := int((deadline - time.monotonic()) * 1000)) > 0 and monitor.poll(left_ms):
                if recv_monitor_message(monitor)["event"] == event:
                    return
            pytest.fail(f"no monitor event {event!r} within {TIMEOUT_MS} ms")

        # An unknown key: the server's ZAP handler rejects it, nothing is delivered.
        intruder = socket(zmq.PUSH, *zmq.curve_keypair(), server_key=server_public)
        intruder.connect(f"tcp://127.0.0.1:{port}")
        intruder.send(b"intruder", zmq.NOBLOCK)  # queued locally; never accepted by the server
        wait_for(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        assert server.poll(200) == 0
        intruder.close(linger=0)

        # A listed worker gets through.
        worker = socket(zmq.PUSH, *load_client(keys / "worker-1.key_secret"), server_key=server_public)
        worker.connect(f"tcp://127.0.0.1:{port}")
        worker.send(b"hello from worker-1", zmq.NOBLOCK)
        wait_for(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        assert server.poll(TIMEOUT_MS), "allowed worker's message did not arrive"
        assert server.recv(zmq.NOBLOCK) == b"hello from worker-1"
        assert server.poll(200) == 0
    finally:
        for s in reversed(sockets):
            s.close(linger=0)
        auth.stop()
        ctx.term()


def test_keys_generate_writes_the_layout_and_prints_no_key(tmp_path, capsys):
    assert main(["keys", "generate", str(tmp_path / "k"), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    for name in ("coordinator.key_secret", "coordinator.key", "worker-0.key_secret", "worker-1.key_secret",
                 "workers/worker-0.key", "workers/worker-1.key"):
        assert (tmp_path / "k" / name).is_file(), name
    for secret in (tmp_path / "k").glob("*.key_secret"):
        assert secret.stat().st_mode & 0o777 == 0o600
        public, secret_key = load_client(secret)
        assert public.decode() not in printed and secret_key.decode() not in printed
    assert main(["keys", "generate", str(tmp_path / "k")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_generate_leaves_the_mode_of_a_directory_that_exists(tmp_path, monkeypatch, capsys):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)   # like /tmp: everyone's
    generate(shared, workers=1)
    assert mode(shared) == 0o1777
    assert mode(shared / "workers") == 0o700 and mode(shared / "worker-0.key_secret") == 0o600
    assert sorted(p.name for p in shared.iterdir()) == ["coordinator.key", "coordinator.key_secret",
                                                        "worker-0.key_secret", "workers"]   # no staging left
    # "" is no directory (an unset variable?): not the working directory, whose mode stays too.
    monkeypatch.chdir(tmp_path)
    tmp_path.chmod(0o755)
    assert main(["keys", "generate", ""]) == 2
    assert "the directory name is empty" in capsys.readouterr().err
    assert mode(tmp_path) == 0o755 and not (tmp_path / "coordinator.key").exists()


def test_a_fifo_where_a_key_file_goes_is_an_error_not_a_hang(tmp_path):
    keys = generate(tmp_path / "keys", workers=1)
    for fifo in (keys / "coordinator.key_secret", keys / "workers" / "zz.key"):
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
    # In a process of its own: a reader that blocks on the FIFO would hang the test.
    code = ("from protocol.keys import KeyFileError, load_server, allowed_workers\n"
            f"for load in (load_server, allowed_workers):\n"
            f"    try: load({str(keys)!r})\n"
            f"    except KeyFileError as e: print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines() == [f"{keys}/coordinator.key_secret: not a regular file, so not a key file",
                                       f"{keys}/workers/zz.key: not a regular file, so not a key file"], out.stderr


@pytest.mark.parametrize("which", ["workers", "."])
def test_an_allowlist_others_may_write_is_refused(tmp_path, which):
    keys = generate(tmp_path / "keys", workers=1)
    (keys / which).chmod(0o777)
    with pytest.raises(KeyFileError, match=r"others may write this directory \(mode 0777\)"):
        allowed_workers(keys)


def test_remove_deletes_what_generate_wrote_and_nothing_else(tmp_path):
    keys = generate(tmp_path / "keys", workers=2)
    remove(keys)
    assert not keys.exists()
    remove(keys)   # nothing there: nothing to do
    for stray in ("notes.txt", "workers/notes.txt"):
        keys = generate(tmp_path / stray.replace("/", "-"), workers=1)
        (keys / stray).write_text("mine")
        with pytest.raises(KeyFileError, match=f"{keys / stray} is not a file of `dni keys generate`"):
            remove(keys)
        assert (keys / stray).read_text() == "mine"


def test_one_gate_guards_each_fresh_inbox_of_a_worker_across_resets(tmp_path):
    """A worker's Gate lives as long as the process: made anew at a reset, its ZAP socket's name was often still
    taken by the one just closed (ZeroMQ frees it when it reaps the socket), and the worker died on the rejoin.
    Each round: a fresh inbox, watched; its handshakes wait after forget() and go through after admit()."""
    keys = generate(tmp_path, workers=1)
    ctx = zmq.Context()
    gate = Gate(ctx, logging.getLogger("test"), "not a member")
    client = load_client(keys / "worker-0.key_secret")
    try:
        for round_ in range(5):
            gate.forget()
            inbox = make_socket(ctx, zmq.PULL, {"server": load_server(keys)})
            gate.watch(inbox)
            port = inbox.bind_to_random_port("tcp://127.0.0.1")
            peer = make_socket(ctx, zmq.PUSH, {"client": (*client, load_server(keys)[0])})
            peer.connect(f"tcp://127.0.0.1:{port}")
            peer.send(b"round %d" % round_, zmq.NOBLOCK)
            assert inbox.poll(300) == 0, "a handshake went through before the members were known"
            gate.admit([client[0]])
            assert inbox.poll(TIMEOUT_MS) and inbox.recv(zmq.NOBLOCK) == b"round %d" % round_
            peer.close(linger=0)
            inbox.close(linger=0)
    finally:
        gate.close()
        ctx.destroy(linger=0)
