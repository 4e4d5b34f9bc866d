"""Tracks: self-contained benchmarks built on the round trip (the Shapes track with its
exact oracle, the sanity report). Registries load them by import path."""
