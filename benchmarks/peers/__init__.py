"""Search efficiency against peers (`python -m benchmarks.peers`; see its --help and BENCHMARKS.md, "Peers")."""
