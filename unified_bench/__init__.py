"""Unified-Bench: how much of an image survives a caption -> generation round trip."""

__version__ = "0.1.0"
