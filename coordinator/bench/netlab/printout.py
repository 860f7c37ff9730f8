"""What `dni bench network` prints: a line per job as it ends, then the check, projection, hop, credit and targets."""
from __future__ import annotations

from coordinator.bench import report


def setting(i: int, n: int, r: dict) -> str:
    """The start of a job's line: its place in the sweep and its setting."""
    extra = (f" bw {r['bandwidth']}" if r["bandwidth"] else "") + (f" slow {r['slow_stage']}@{r['slow_share']:g}"
                                                                    if r["slow_stage"] else "") \
        + ("" if r["coordinator_delayed"] else " coordinator undelayed") + f" {r['credit']} credit"
    return f"[{i}/{n}] {r['mode']:8s} K={r['stages']} {r['delay_ms']:4g} ms w{r['window']}{extra}"


def run(i: int, n: int, r: dict) -> None:
    lat, st = r["stage1_latency_ms"], r["staleness"]["all"]
    rtt = "/".join(f"{x['rtt_ms']['p50']:.1f}" for x in r["links"])
    stale = f"staleness {st['mean']:.2f}/{st['p99']:.0f}" if st["mean"] is not None else "staleness -"
    print(f"{setting(i, n, r)}: "
          f"{r['samples_per_second']:8,.0f} samples/s  stage-1 p50 {lat['p50']:7.2f} p99 {lat['p99']:7.2f} ms  "
          f"{stale}  acc {r['test_accuracy']:.4f}  RTT {rtt} ms  "
          f"relays {r['cpu_ms_per_batch']['relays']:.2f} ms CPU/batch",
          flush=True)


def failure(i: int, n: int, r: dict) -> None:
    print(f"{setting(i, n, r)}: FAILED: {r['failed']}", flush=True)


def summary(result: dict) -> None:
    print("\nprojection check at 2 stages on this machine (all processes and relays sharing its cores; samples/s "
          "with each process's measured wait for a core):")
    for v in result["projection"]["validation"]:
        s, lat = v["samples_per_second"], v["stage1_p50_ms"]
        waits = "/".join(f"{f:.1f}" for f in v["stretch"].values())
        print(f"  {v['mode']:8s} {v['credit']:11s} {v['delay_ms']:4g} ms: samples/s projected {s['projected']:8,.0f} "
              f"measured {s['measured']:8,.0f}; stage-1 p50 projected {lat['projected']:7.2f} "
              f"measured {lat['measured']:7.2f} ms"
              f"  ({v['bound']}; (CPU + wait) / CPU {waits}, others took {v['other_cores']:.2f} cores)")
    print("\nPROJECTION, a core or host per stage (not measured):")
    for v in result["projection"]["hosts"]:
        print(f"  {v['mode']:8s} {v['credit']:11s} w{v['window']:<3d} {v['delay_ms']:4g} ms K={v['stages']}: "
              f"{v['samples_per_second']:9,.0f} samples/s, stage-1 latency {v['stage1_latency_ms']:7.2f} ms "
              f"({v['bound']}; costs from K={v['from_stages']})")
    print("\nthe coordinator hop (dni): its links delayed like the others vs passed at once")
    for h in result["hop"]:
        s = h["samples_per_second"]
        print(f"  {h['credit']:11s} {h['delay_ms']:4g} ms w{h['window']}: {s['through']:8,.0f} vs "
              f"{s['undelayed']:8,.0f} samples/s ({h['throughput_lost']:.0%} lost to the hop)")
    if result["credit"]:
        print(f"\ncredit, side by side (K={result['params']['focus_stages']}): samples/s, stage-1 p50/p99 ms, "
              "staleness mean/p99, test accuracy")
    for row in result["credit"]:
        cells = "  |  ".join(credit_cell(c, x) for c, x in row.items() if isinstance(x, dict))
        bw = f" bw {row['bandwidth']}" if row["bandwidth"] else ""
        print(f"  {row['mode']:5s} w{row['window']:<2d} {row['delay_ms']:4g} ms{bw}: {cells}")
    print(f"\ncdni windows within 0.5 pp of 0 ms accuracy: {result['cdni_windows_within_half_point']}")
    report.print_targets(result["targets"])
    if result["failed"]:
        print(f"\n{len(result['failed'])} of {len(result['failed']) + len(result['runs'])} jobs FAILED "
              "(left out of every figure above); their logs:")
    for r in result["failed"]:
        print(f"  {', '.join(r['logs']) or '(none)'}\n    {r['failed']}")


def credit_cell(credit: str, x: dict) -> str:
    """One credit scheme's figures in a row of the side-by-side table."""
    stale = f"{x['staleness_mean']:5.2f}/{x['staleness_p99']:3.0f}" if x["staleness_mean"] is not None else "    -/  -"
    return (f"{credit} {x['samples_per_second']:7,.0f} {x['stage1_p50_ms']:6.2f}/{x['stage1_p99_ms']:6.2f} "
            f"{stale} {x['test_accuracy']:.4f}")
