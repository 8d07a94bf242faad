"""Development tools for region_latency, kept out of the runtime package (installed by the `test` and `demo` extras).

- `region_latency_devkit.netsim`: simulated AWS regions with true packet delays (docs/NETSIM.md).
- `region_latency_devkit.tracesim`: latency traces replayed through a real tracker on a virtual clock.
- `region_latency_devkit.demo`: the wiring of `region-latency-exporter demo`.
- `region_latency_devkit.process`: `stop_process`, for the child processes tests and benchmarks start.

The runtime package never imports this one (except the `demo` command, lazily).
"""
