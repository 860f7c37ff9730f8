"""The tied weights' section of docs/results.md: a box that waits for the parameter service only beyond the bound."""
from push import local_rows, network_rows
from results_parts import ms, pct, sources, table


def push_section(push: dict) -> list[str]:
    """Issue 23: a box computing on its copy while within the bound, against one that waited for the service."""
    # the script that measures them lays the figures out
    body, (delays, net_body) = local_rows(push, ms, pct), network_rows(push, ms)
    return ["## Tied weights: a box waits for the service only beyond the bound", "",
            "Sequential MNIST as above, three designs (issue 23, [recurrent.md](recurrent.md);",
            "`python benchmarks/push.py local|network`): a box pulled the weights before every unroll and waited; its",
            "push asked for the next unroll's weights and the box waited for the answer; the box computes at once",
            "while its copy is within --max-staleness. Messages per training batch from the counters; per box",
            "1 / 2 / 3 / 4, update latency and waits, ms.", "",
            *table(["run", "messages / batch", "of them pull + answer", "latency p50", "latency p99",
                    "waited for the service, ms / batch", "samples/s", "test accuracy"],
                   ["---", *["---:"] * 7], body),
            "Network lab, every link delayed, before (the box waited for the answer to its push) and after (it",
            "computes within the bound): over the 4 boxes, the mean p50 update latency (and wait a batch), ms; jobs",
            "alternated before and after, round by round (r1-r4), then three rounds of after alone on a quieter",
            "machine (r5-r7), and three more at BP(1) between boxes, the default since (r8-r10); ratio: the p50 at",
            "the longest delay against none.", "",
            *table(["", *(f"{d:g} ms" for d in delays), "ratio"], ["---", *["---:"] * (len(delays) + 1)], net_body),
            *sources(["push.json"], [push])]
