"""Benchmarks of region-latency-exporter against simulated regions; `python -m bench` runs them all.

Results go to bench/BENCHMARKS.md (see its top for the commands). Shared helpers live in bench/common.py; nothing
here imports from tests/.
"""
