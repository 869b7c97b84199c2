"""Workloads every worker ships: `python-hello`, `python-fib` and `echo-result`."""
