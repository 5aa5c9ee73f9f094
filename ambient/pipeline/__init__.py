"""Pipeline tooling: downloads, DVC, GPU slots, benchmarks, critical path, README tables."""
