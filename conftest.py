"""Registers the benchmark suite's pytest plugin (options --sweep, --methods, --device, --dtype)."""

pytest_plugins = ["bench.plugin"]
