"""A confidential-compute worker for EEA Off-Chain Trusted Compute v1.1 work orders.

The protocol core (`hashing`, `crypto`, `models`, `core`, `requester`, `processor`) does no I/O:
it turns bytes and plain data into bytes and plain data. Transport (`pool`, `client`), the
command line (`cli`) and deployment are thin shells around it; `_internal` is not public API.
"""

__version__ = "0.1.0"
