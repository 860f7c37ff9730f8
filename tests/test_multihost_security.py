"""Across machines, CURVE: wrong keys, another protocol version, outsiders and exposed binds are refused."""
import json
import signal
import sys
import time

from namespaced import NETWORK_LAB, PORT, coordinator, dni, network, secrets_of, worker
from timing import training, wait_for

from protocol.keys import generate, load_public
from protocol.kinds import VERSION

pytestmark = NETWORK_LAB


def test_workers_without_the_right_keys_are_refused_and_the_run_goes_on(tmp_path):
    keys = generate(tmp_path / "keys", workers=3)
    other = generate(tmp_path / "other", workers=1)
    with network(7) as (c, no_key, wrong_key, wrong_server, *good):
        coord = coordinator(c, keys, 3, tmp_path / "run", "--hidden", "16,16", "--train-subset", "1280",
                            "--epochs", "1")
        # The rogues come first, had any been admitted it would hold a stage; one by one, each
        # more than a second after the last refusal, so the coordinator logs every one (it logs
        # a refusal like the one before only once a second: refused peers may retry at 10 Hz).
        rogues = []
        for start in (lambda: dni(no_key, "worker", "--coordinator", f"tcp://{c.ip}:{PORT}", "--insecure"),
                      lambda: worker(wrong_key, c, other / "worker-0.key_secret", keys / "coordinator.key"),
                      lambda: worker(wrong_server, c, keys / "worker-0.key_secret", other / "coordinator.key")):
            before = coord.text.count("refused a connection")
            rogues.append(start())
            assert rogues[-1].wait(30) == 1, rogues[-1].text
            assert wait_for(lambda: coord.text.count("refused a connection") > before), coord.text
            time.sleep(1.1)
        workers = [worker(w, c, keys / f"worker-{i}.key_secret", keys / "coordinator.key")
                   for i, w in enumerate(good)]
        assert coord.wait() == 0, coord.text
        assert [w.wait() for w in workers] == [0, 0, 0]
    # Mechanism mismatch or a dropped handshake, whichever the worker notices first: both point at keys.
    assert "cannot join the coordinator" in rogues[0].text and "--key" in rogues[0].text
    assert "cannot join the coordinator: the key was refused" in rogues[1].text
    assert "dropped during the CURVE handshake" in rogues[2].text
    # The coordinator logs each refusal: by address and abbreviated public key where ZAP saw
    # one, by cause where the handshake failed before ZAP.
    rogue_public = load_public(other / "workers" / "worker-0.key").decode()
    assert f"refused a connection from {wrong_key.ip}: key {rogue_public[:8]}... is not on the allowlist" in coord.text
    assert rogue_public not in coord.text
    refusals = [line for line in coord.lines if "refused a connection" in line]
    before_zap = f"dni.coordinator: refused a connection on tcp://{c.ip}:{PORT}: "
    assert refusals[0].startswith(before_zap) and refusals[-1].startswith(before_zap), refusals
    registered = [line for line in coord.lines if "registered stage" in line]
    assert len(registered) == 3 and all(any(f"tcp://{w.ip}:" in line for w in good) for line in registered)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stages"] == 3
    for secret in secrets_of(keys, other):
        assert all(secret not in p.text for p in (coord, *rogues, *workers))


# Scripts run inside a namespace; they take key files (never keys) on the command line.
CURVE_CLIENT = """
import sys, zmq
from protocol.keys import load_client, load_public
def curve_client(kind, secret_file, server_key_file):
    s = zmq.Context.instance().socket(kind)
    s.linger = 0
    (s.curve_publickey, s.curve_secretkey), s.curve_serverkey = load_client(secret_file), load_public(server_key_file)
    return s
"""

RAW_HELLO = CURVE_CLIENT + """
import msgpack
secret_file, server_key_file, endpoint, version = sys.argv[1:]
s = curve_client(zmq.DEALER, secret_file, server_key_file)
s.connect(endpoint)
# A hello as protocol/codec.py would encode it, but for another protocol version.
s.send(msgpack.packb([int(version), "hello", "raw", -1,
                      {"endpoint": "tcp://10.0.0.1:1", "stage": None, "host": "raw", "pid": 1,
                       "key": load_client(secret_file)[0].decode()}, []]))
if s.poll(10000):
    version, kind, _, _, meta, _ = msgpack.unpackb(s.recv(), raw=False)
    print(kind, version, meta.get("reason"))
s.close()
zmq.Context.instance().term()
"""

INTRUDER = CURVE_CLIENT + """
from zmq.utils.monitor import recv_monitor_message
secret_file, server_key_file, endpoint = sys.argv[1:]
s = curve_client(zmq.PUSH, secret_file, server_key_file)
monitor = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
s.connect(endpoint)
print(recv_monitor_message(monitor)["event"].name if monitor.poll(10000) else "no handshake")
s.disable_monitor()
monitor.close()
s.close()
zmq.Context.instance().term()
"""


def test_a_worker_of_another_protocol_version_is_refused_with_both_versions_named(tmp_path):
    keys = generate(tmp_path / "keys", workers=1)
    theirs = VERSION + 1
    with network(2) as (c, w):
        coord = coordinator(c, keys, 2, tmp_path / "run", "--hidden", "16")
        reply = w.run([sys.executable, "-c", RAW_HELLO, str(keys / "worker-0.key_secret"),
                       str(keys / "coordinator.key"), f"tcp://{c.ip}:{PORT}", str(theirs)], timeout=30).stdout
        assert wait_for(lambda: "refused a worker" in coord.text), coord.text
        coord.proc.send_signal(signal.SIGINT)
        assert coord.wait() == 130
    words = f"peer speaks {theirs}, this build speaks {VERSION}"
    assert reply.startswith(f"refuse {VERSION} ") and words in reply, reply
    assert f"refused a worker: protocol version mismatch: {words}" in coord.text


def test_data_inboxes_admit_only_the_runs_members(tmp_path):
    """Stage 1's inbox refuses a key the coordinator would admit but that is not in this run."""
    keys = generate(tmp_path / "keys", workers=3)   # worker-2 stays out of this 2-stage run
    with network(4) as (c, w1, w2, intruder):
        coord = coordinator(c, keys, 2, tmp_path / "run", "--hidden", "16", "--epochs", "500")
        workers = [worker(w, c, keys / f"worker-{k - 1}.key_secret", keys / "coordinator.key", "--stage", str(k))
                   for k, w in ((1, w1), (2, w2))]
        assert wait_for(lambda: training(tmp_path / "run"), 30), coord.text
        inbox = next(line for line in coord.lines if "registered stage 1" in line).rsplit(" ", 1)[1]
        # Stage 1's inbox is a CURVE server with worker-0's keypair.
        seen = {who: intruder.run([sys.executable, "-c", INTRUDER, str(keys / secret),
                                   str(keys / "workers/worker-0.key"), inbox], timeout=30).stdout.strip()
                for who, secret in (("outsider", "worker-2.key_secret"), ("member", "worker-1.key_secret"))}
        coord.proc.send_signal(signal.SIGINT)
        assert coord.wait() == 130
        assert [w.wait() for w in workers] == [0, 0]
    assert seen == {"outsider": "HANDSHAKE_FAILED_AUTH", "member": "HANDSHAKE_SUCCEEDED"}
    outsider = load_public(keys / "workers" / "worker-2.key").decode()
    assert (f"refused a connection from {intruder.ip}: key {outsider[:8]}... is not a member of this run"
            in workers[0].text), workers[0].text


def test_exposed_binds_without_keys_are_refused(tmp_path):
    with network(2) as (c, w):
        coord = c.run([sys.executable, "-m", "coordinator", "coordinator", "--bind", f"tcp://{c.ip}:{PORT}",
                       "--workers", "2", "--hidden", "16"], check=False)
        work = w.run([sys.executable, "-m", "coordinator", "worker", "--coordinator", f"tcp://{c.ip}:{PORT}"],
                     check=False)
    assert coord.returncode == 2 and coord.stderr.count("\n") == 1
    assert coord.stderr.startswith(f"dni: error: --bind tcp://{c.ip}:{PORT} is reachable from other hosts")
    assert work.returncode == 2 and work.stderr.count("\n") == 1
    assert f"the data inbox would listen on {w.ip}, reachable from other hosts" in work.stderr
