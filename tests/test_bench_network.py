"""`dni bench network` on real namespaces, relays, tc and cgroups: every figure present and sane, nothing left."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.bench.netlab import job, runs, shaping
from coordinator.bench.netlab.hosts import ETC_NETNS, hosts, ip_binary

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
DELAY = 5.0


def leftovers() -> dict:
    netns = subprocess.run([ip_binary(), "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run([ip_binary(), "-o", "link", "show"], capture_output=True, text=True).stdout
    return {"namespaces": [line.split()[0] for line in netns.splitlines() if line.startswith("dninet")],
            "links": [w for w in links.split() if w.startswith(("dnb", "dnv"))],
            "name tables": [n for n in os.listdir(ETC_NETNS) if n.startswith("dninet")]
            if os.path.isdir(ETC_NETNS) else [],
            "cgroups": [n for n in os.listdir(shaping.CGROUP_V1) if n.startswith("dni-bench-")]
            if os.path.isdir(shaping.CGROUP_V1) else []}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow
@needs_root
def test_a_small_sweep_gives_every_figure_and_leaves_nothing(tmp_path):
    before = leftovers()
    out = tmp_path / "net.json"
    run = subprocess.run([sys.executable, "-m", "coordinator", "bench", "network", "--delays", f"0,{DELAY:g}",
                          "--stages", "2", "--focus-stages", "2", "--modes", "dni,backprop,gpipe,pipedream",
                          "--windows", "", "--throughput-window", "2", "--epochs", "1", "--slow-stage", "2",
                          "--slow-share", "0.5", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert leftovers() == before
    result = json.loads(out.read_text())
    assert result["delay_by"] == ("netem" if result["netem"]["available"] else "relay")
    runs = result["runs"]
    modes = ("dni", "backprop", "gpipe", "pipedream")
    assert {(r["mode"], r["delay_ms"]) for r in runs} >= {(m, d) for m in modes for d in (0.0, DELAY)}
    for r in runs:
        lat = r["stage1_latency_ms"]
        assert positive(r["samples_per_second"]) and positive(lat["p50"]) and lat["p99"] >= lat["p50"], r
        assert 0.1 < r["test_accuracy"] <= 1 and r["steps"] >= 150
        assert len(r["links"]) == 3   # coordinator -> stage 1 -> head -> coordinator
        for link in r["links"]:
            delayed = r["coordinator_delayed"] or "coord" not in (link["from"], link["to"])
            assert link["rtt_ms"]["min"] >= (2 * r["delay_ms"] if delayed else 0) and positive(link["rtt_ms"]["p50"])
            # A message's round trip crosses the same delayed link (at 0 ms the two are separate
            # samples of ~0.15 ms noise: a 128 KiB message's p50 fell below a ping's min in CI).
            assert link["rtt_message_ms"]["p50"] >= (2 * r["delay_ms"] if delayed else 0)
            assert positive(link["rtt_message_ms"]["p50"])
        cpu = r["cpu_ms_per_batch"]
        assert all(positive(s["total"]) and positive(s["compute"]) for s in cpu["stages"])
        assert positive(cpu["coordinator"]) and cpu["relays"] >= 0
        sched = r["sched_ms_per_batch"]   # the kernel's count over training: run, and waited for a core
        assert all(positive(sched[n]["ran"]) for n in ("coordinator", "stage1", "stage2"))
        assert all(v["waited"] >= v["path_waited"] >= 0 and v["ran"] >= 0 for v in sched.values()), \
            (r["mode"], {n: v for n, v in sched.items() if not v["waited"] >= v["path_waited"] >= 0 <= v["ran"]})
        if r["mode"] == "dni":
            st = r["staleness"]["all"]
            assert st["mean"] >= 0 and st["p99"] >= st["p50"] and st["n"] > 0
        else:
            assert r["staleness"]["all"]["n"] == 0   # locked: no synthesizer, no targets
        if result["delay_by"] == "relay" and r["coordinator_delayed"]:
            assert all(x["delay_ms"] == r["delay_ms"] and x["cpu_s"] >= 0 for x in r["relays"].values())
    slow = [r for r in runs if r["slow_stage"]]
    assert slow and all(r["throttled"]["throttled_periods"] > 0 for r in slow)
    assert [h["delay_ms"] for h in result["hop"]] == [DELAY]
    assert all(positive(h["samples_per_second"]["undelayed"]) for h in result["hop"])
    assert len(result["projection"]["validation"]) == 4
    assert all(min(v["stretch"].values()) >= 1 for v in result["projection"]["validation"])
    assert {v["stages"] for v in result["projection"]["hosts"]} == {2, 3, 4, 8}
    assert {v["mode"] for v in result["projection"]["hosts"]} == set(modes)
    assert result["targets"] and all(set(t) == {"name", "value", "op", "limit", "pass"} for t in result["targets"])
    # The backprop round trip crosses two delayed links per stage boundary: it cannot take less
    # than their delays (the growth over 0 ms is a benchmark target: its 0 ms figure is noisy).
    # So does every pipeline's: gpipe's flush and pipedream's backward wait for the head's gradient.
    for mode in ("backprop", "gpipe", "pipedream"):
        p50 = {r["delay_ms"]: r["stage1_latency_ms"]["p50"] for r in runs if r["mode"] == mode and not r["slow_stage"]}
        assert p50[DELAY] >= 2 * DELAY and p50[DELAY] > p50[0.0], mode


def test_a_failed_job_is_recorded_with_its_logs_kept_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    first, second = runs.settings({"focus_stages": 2, "delays": [0.0], "window": 2, "throughput_window": 2,
                                   "stages": [2], "modes": ["backprop"], "windows": [], "window_delays": [],
                                   "slow_stage": 0, "bandwidth": None, "credits": ["coordinator", "link"]})

    def fake(s, p, keys, out, use_netem):   # the first job fails as a coordinator does: its log written, exit 1
        if s == second:
            return {"ok": s.tag()}
        (out.parent / f"{out.name}.coordinator.log").write_text("dni: error: no such data\n")
        out.mkdir()
        raise RuntimeError("coordinator exit 1")

    monkeypatch.setattr(job, "run", fake)
    monkeypatch.setattr(runs.printout, "run", lambda i, n, r: None)
    tmp = tmp_path / "deleted with the sweep"
    tmp.mkdir()
    done, failed = runs.sweep([first, second], {"runs_dir": None}, None, tmp, False)
    assert done == [{"ok": second.tag()}]
    [f] = failed
    assert f["failed"] == "RuntimeError: coordinator exit 1"
    assert (f["mode"], f["credit"]) == ("backprop", "coordinator")
    assert [Path(x).name for x in f["logs"]] == [first.tag(), f"{first.tag()}.coordinator.log"]
    assert all(not x.startswith(str(tmp)) for x in f["logs"])   # moved out of the temporary directory
    assert Path(f["logs"][1]).read_text() == "dni: error: no such data\n"
    assert "FAILED: RuntimeError: coordinator exit 1" in capsys.readouterr().out
    shutil.rmtree(Path(f["logs"][0]).parent)


def test_a_thread_that_ends_between_two_samples_takes_nothing_from_the_span():
    first = {"1": (10.0, 4.0, 4.0), "2": (5.0, 3.0, 0.0), "7": (1.0, 1.0, 1.0)}   # 2: a helper, 7: ZeroMQ I/O
    last = {"1": (30.0, 6.0, 6.0), "7": (2.0, 1.5, 1.5), "9": (0.5, 0.25, 0.0)}     # 2 ended, 9 began
    assert job.sched_span(first, last) == (20.0 + 1.0 + 0.5, 2.0 + 0.5 + 0.25, 2.0 + 0.5)
    assert job.sched_span({}, {}) == (0.0, 0.0, 0.0)


@pytest.mark.slow
@needs_root
def test_a_sweep_whose_jobs_cannot_start_records_them_and_makes_its_keep_directory(tmp_path):
    before = leftovers()
    keep, out = tmp_path / "not" / "yet", tmp_path / "net.json"
    run = subprocess.run([sys.executable, "-m", "coordinator", "bench", "network", "--delays", "0", "--stages", "2",
                          "--focus-stages", "2", "--modes", "dni,backprop", "--windows", "", "--throughput-window",
                          "2", "--epochs", "1", "--insecure", "--data", str(tmp_path / "no such data"),
                          "--keep", str(keep), "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    after = leftovers()   # links apart: other namespaced tests may make and remove theirs meanwhile (dnb*, dnv*)
    assert (after["namespaces"], after["cgroups"]) == (before["namespaces"], before["cgroups"])
    result = json.loads(out.read_text())
    assert result["runs"] == [] and len(result["failed"]) == 2   # dni and backprop at 0 ms: both tried
    for f in result["failed"]:
        assert f["failed"] and f["logs"] and all(Path(x).parent == keep for x in f["logs"])
        assert any(x.endswith(".coordinator.log") for x in f["logs"])


def test_without_root_it_refuses_in_one_line(tmp_path):
    # A user namespace of its own makes this process uid 65534 while it can still read our files.
    argv = [sys.executable, "-m", "coordinator", "bench", "network", "--json", str(tmp_path / "x")]
    run = subprocess.run(["unshare", "--user", *argv] if os.geteuid() == 0 else argv,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("dni: error: dni bench network needs root: it makes a network namespace")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@needs_root
def test_htb_shapes_the_link_and_goes_with_it():
    with hosts(2, prefix="dninet") as (a, b):
        assert "htb 1mbit" in shaping.shape(b.veth, None, "1mbit")   # into b: 125 kB/s
        assert "htb" in shaping.qdisc(b.veth)
        server = b.socket()
        server.bind((b.ip, 7000))
        server.listen(1)
        client = a.socket()
        client.connect((b.ip, 7000))
        conn, _ = server.accept()
        t0 = time.monotonic()
        client.sendall(b"x" * 250_000)
        client.shutdown(socket.SHUT_WR)
        got = 0
        while chunk := conn.recv(65536):
            got += len(chunk)
        took = time.monotonic() - t0
        for s in (client, conn, server):
            s.close()
        assert got == 250_000 and took > 1.5, took   # 2 s at 1 mbit, less the first burst
        veth = b.veth
    assert veth not in subprocess.run([ip_binary(), "-o", "link"], capture_output=True, text=True).stdout
