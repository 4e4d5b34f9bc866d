"""Example Unified-Bench plugin: one adapter, registered through an entry point."""

from unified_bench_plugin_example.adapter import EchoAdapter

__all__ = ["EchoAdapter"]
