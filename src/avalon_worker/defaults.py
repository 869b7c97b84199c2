"""Every setting's default (and the choices of those that have a fixed few), defined once: the
command line, configuration files, the stores, the pump, the front door and the docs' tables all
read them here.

Plain values and no imports, so that the command line's parser (which shows them in `--help`)
loads nothing else. `tests/test_defaults.py` holds the README to these values.
"""

from __future__ import annotations

# the worker's endpoint, and where the requester commands look for it
BIND = "tcp://*:7777"
ENDPOINT = "tcp://127.0.0.1:7777"
# 16 MiB of input is ~22 MiB once base64-encoded inside a JSON string inside a JSON string.
MAX_REQUEST_BYTES = 32 * 1024 * 1024

# the pool
TIMEOUT_S = 60.0  # an order's time limit in a worker process (--timeout-s)
QUEUE_LIMIT = 256  # requests waiting for a free process; more are answered BUSY
SPARE_WORKERS = 1  # warm processes kept to replace a lost one (none with --workers 0)
RSA_BITS = 3072  # a new identity's encryption key
RSA_BITS_ALLOWED = (2048, 3072, 4096)

# attestation
ATTESTATION_MODES = ("auto", "none", "gramine", "tdx", "snp")
ATTESTATION_ROOT = "/dev/attestation"  # Gramine's pseudo-files
TSM_REPORT_DIR = "/sys/kernel/config/tsm/report"  # configfs-tsm, in a confidential VM
TDX_MEASUREMENTS_DIR = "/sys/devices/virtual/misc/tdx_guest/measurements"
TEES = ("sgx", "tdx", "snp")  # the sections of a policy file

# the requester
CLIENT_TIMEOUT_S = 30.0  # how long a requester command waits for each reply

# the store
STORE_ENV = "AVALON_WORKER_STORE"  # the environment variable --store defaults to
RESULT_TTL_S = 24 * 3600.0  # how long a result is kept
PENDING_TTL_S = 3600.0  # how long an order waits for a worker that has gone silent
MAX_PENDING = 10_000  # pending orders per worker
MAX_PENDING_BYTES = 1 << 30  # their bytes, per worker

# the front door: leases, liveness, HTTP bounds
LEASE_S = 10.0  # a lease outlives its pump by at most this; renewed every third of it
HEARTBEAT_S = 5.0  # how often a pump says its worker is alive
STALE_AFTER_S = 30.0  # a worker without a heartbeat this long is off-line
FRONT_MAX_IN_FLIGHT = 16  # orders a pump has sent to its worker and not yet had answered ...
PUMP_MAX_IN_FLIGHT = 8  # ... and `avalon-worker pump`'s (serve sizes its own front door's to its pool)
SUBMIT_WAIT_S = 5.0  # a submit through the listener waits at most this for its result (Avalon's SDK gives up after 10 s)
HTTP_MAX_CONNECTIONS = 1000
HTTP_HEADER_TIMEOUT_S = 10.0
HTTP_IDLE_TIMEOUT_S = 30.0
HTTP_BODY_BUDGET_REQUESTS = 2  # bodies in flight, all connections together: this many maximal requests
