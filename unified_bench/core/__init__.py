"""The base layer: the vocabulary every other layer shares (protocol, seeds, sharding,
statistics, errors, image I/O, provenance). It imports nothing else from the package."""
