"""recoveryd's benchmark suite: the performance targets of DESIGN.md, measured.

``python -m bench [--tiny] [--json OUT]`` (or ``make bench``) starts its own
redis-server on a free loopback port, runs the real daemon as a subprocess
against it, measures ingest, dispatch, lateness, idle cost, memory and
classification, runs arq and RQ on the same rows (`bench.peers`), and prints
every figure beside the targets and as a ratio against the peers.
"""
