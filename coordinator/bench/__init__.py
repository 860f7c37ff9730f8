"""`dni bench`: the timing benches (latency, transport, network, fuzz) and the defaults sweep.

One module per user-facing bench (latency.py, transport.py, network.py, fuzz.py; a new one such
as race goes beside them and into cli.py); what they share: report.py (the machine, targets),
plot.py, procfs.py (what /proc says of a process). netlab/ is the network lab the network bench
and the multi-host tests run on; defaults/ is the sweep that chose the run defaults.
"""
