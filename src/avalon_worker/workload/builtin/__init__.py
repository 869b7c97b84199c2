"""Workloads every worker ships: `python-hello`, `python-fib` and `echo-result`, and Avalon's
example workloads `heart-disease-eval`, `inside-out-eval` and `simple-wallet` in Python."""
