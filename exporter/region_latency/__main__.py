"""`python -m region_latency` runs the command line."""

from region_latency.cli import main

main()
