"""The tied weights' section of docs/results.md: the push that asks for the next unroll's weights."""
from push import local_rows, network_rows
from results_parts import ms, pct, sources, table


def push_section(push: dict) -> list[str]:
    """Issue 23: the push answered with the next unroll's weights, against a pull before every unroll."""
    # the script that measures them lays the figures out
    body, (delays, net_body) = local_rows(push, ms, pct), network_rows(push, ms)
    return ["## Tied weights: the next unroll's weights asked with the push", "",
            "Sequential MNIST as above. Before: a box pulled the weights before every unroll and waited; after: its",
            "push asks for them (issue 23, [recurrent.md](recurrent.md); `python benchmarks/push.py local|network`).",
            "Messages per training batch from the counters; per box 1 / 2 / 3 / 4, update latency and waits, ms.", "",
            *table(["run", "messages / batch", "of them pull + answer", "latency p50", "latency p99",
                    "waited for the service, ms / batch", "samples/s", "test accuracy"],
                   ["---", *["---:"] * 7], body),
            "Network lab, every link delayed: over the 4 boxes, the mean p50 update latency (and wait a batch), ms;",
            "jobs alternated before and after, in rounds r1-r3; ratio: the p50 at the longest delay against none.", "",
            *table(["", *(f"{d:g} ms" for d in delays), "ratio"], ["---", *["---:"] * (len(delays) + 1)], net_body),
            *sources(["push.json"], [push])]
