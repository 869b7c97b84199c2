"""Command line: `avalon-worker serve|config|signup|submit|run-orders|demo|verify|...`, and `wo-processor`.

The only place that configures logging. Errors a person can fix are printed as one line,
without a traceback (`errors.Error.diagnostics()`). Every command exits 0 when it did its job,
1 when something failed a check or could not be reached (a failed work order or verification,
an unreachable worker), 2 when the command or its set-up is wrong (a bad option or file).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__, orderlog
from ._internal.router import EndpointError, listen
from .attestation import measure
from .attestation.cli import (
    add_policy_arguments,
    add_verify_arguments,
    endpoint_argument,
    require_attested_worker,
    run_verify,
    say,
)
from .attestation.providers import MODES as ATTESTATION_MODES
from .attestation.providers import select_provider
from .attestation.tsm import DEFAULT_REPORT_DIR
from .cli_options import (
    COUNT,
    PORT_OR_OFF,
    POSITIVE_COUNT,
    SECONDS,
    SECONDS_OR_OFF,
    add_config_argument,
    add_log_level_argument,
    config_toml,
    parse_with_config,
)
from .client import DEFAULT_TIMEOUT_S, WorkerClient
from .crypto import SigningKey
from .errors import Error, SetupError
from .front import door as front_door
from .front import http_guard
from .front.listener_client import ListenerClient
from .front.service import add_listener_command, add_pending_ttl_argument, add_pump_command
from .identity import ALLOWED_RSA_BITS, DEFAULT_RSA_BITS, disable_core_dumps, load_or_create
from .order_table import JsonLines, Outcome, Table, terminal_width
from .pool import DEFAULT_MAX_REQUEST_BYTES, PoolConfig, StopFlag
from .requester import VerificationError, WorkOrderFailed
from .store.cli import add_store_argument, add_store_commands
from .workload.registry import WorkloadRegistry

logger = logging.getLogger("avalon_worker")

DEFAULT_BIND = "tcp://*:7777"
DEFAULT_ENDPOINT = "tcp://127.0.0.1:7777"
READY_PREFIX = "listening on "


class UsageError(SetupError):
    """A setup problem the user can fix; printed as one line."""


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "avalon-worker")


def _configure_logging(level: str) -> None:
    # The format uses no caller, thread or process fields: skip collecting them for every record
    # (the per-order line is on the hot path; see "Optimization" in the logging HOWTO).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=orderlog.FORMAT, stream=sys.stderr)


# serve ----------------------------------------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `serve` (and `wo-processor`, and `config --print`): one list, which the
    README's table and configuration files are checked against."""
    add_config_argument(parser)
    parser.add_argument("--bind", default=DEFAULT_BIND, help=f"ZMQ endpoint to listen on (default {DEFAULT_BIND})")
    # `--workload` is the original worker's spelling (wo-processor --workload FILE)
    parser.add_argument("--workloads", "--workload", dest="workloads", metavar="FILE",
                        help="workloads.json registry (default: built-in workloads)")
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("AVALON_WORKER_STATE_DIR") or default_state_dir(),
        help="where the worker's identity is kept (default $AVALON_WORKER_STATE_DIR or %(default)s)",
    )
    parser.add_argument(
        "--rsa-bits", type=int, choices=ALLOWED_RSA_BITS,
        help=f"size of a newly created encryption key (default {DEFAULT_RSA_BITS}); an existing key is kept",
    )
    parser.add_argument(
        "--max-request-bytes", type=POSITIVE_COUNT, default=DEFAULT_MAX_REQUEST_BYTES,
        help="larger requests are refused (default %(default)s, room for a 16 MiB input)",
    )
    parser.add_argument(
        "--insecure-reuse-session-iv", action="store_true",
        help="INSECURE legacy mode: encrypt results under the request's sessionKeyIv, as the original worker did, "
        "for old clients that ignore each item's iv. The same AES-GCM key and nonce then protect the request "
        "hash, the inputs and the outputs: anyone who sees the traffic can recover plaintext. Use only with such clients.",
    )
    parser.add_argument(
        "--attestation", choices=ATTESTATION_MODES, default="auto",
        help="evidence provider: gramine (SGX, /dev/attestation), tdx or snp (a confidential VM's configfs-tsm), "
        "none, or auto-detect (default)",
    )
    parser.add_argument("--attestation-root", default="/dev/attestation", help=argparse.SUPPRESS)
    parser.add_argument("--tsm-report-dir", default=DEFAULT_REPORT_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--print-code-measurement", action="store_true",
                        help="print the code event a TDX worker with these options extends into RTMR3 (what it "
                        "measured and the digest), and exit")
    parser.add_argument("--tdx-measurements-dir", default=measure.DEFAULT_MEASUREMENTS_DIR, help=argparse.SUPPRESS)
    parser.add_argument(
        "--workers", type=COUNT, default=len(os.sched_getaffinity(0)),
        help="worker processes behind the endpoint (default: usable cores, %(default)s); "
        "0 runs orders in this process, one at a time, without isolation or time limits",
    )
    parser.add_argument("--timeout-s", type=SECONDS,
                        help="time limit of a workload (default 60; a request's smaller responseTimeoutMSecs wins)")
    parser.add_argument("--memory-limit-mb", type=COUNT, default=0,
                        help="address-space limit of each worker process, interpreter included (default: none)")
    parser.add_argument("--queue-limit", type=COUNT, default=256,
                        help="requests that may wait for a free process; more are answered BUSY (default %(default)s)")
    parser.add_argument("--spare-workers", type=COUNT,
                        help="warm processes kept ready to replace one that is lost (default 1)")
    parser.add_argument("--no-prefetch", action="store_true",
                        help="hand each process one order at a time (no orders waiting in its slot)")
    parser.add_argument("--pin-cpus", action="store_true",
                        help="pin each worker process to a core of its own and the supervisor to the cores left over; "
                             "steadier throughput when --workers is below the core count")
    parser.add_argument("--metrics-port", type=PORT_OR_OFF, default=0, help="serve Prometheus metrics on this port (default: off)")
    parser.add_argument("--metrics-addr", default="127.0.0.1",
                        help="address for --metrics-port (default %(default)s; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--worker-id", help="refuse work orders whose workerId is not this hex id (error 2); "
                        "the signup then names it as worker_id (default: accept any workerId)")
    parser.add_argument("--replay-window-s", type=SECONDS_OR_OFF, default=0.0,
                        help="refuse a work order whose workOrderId was served in the last N seconds, across all "
                        "worker processes (error 2; default 0: off, every verified order is served)")
    add_log_level_argument(parser)
    parser.add_argument("--listen-http", metavar="HOST:PORT",
                        help="also serve Avalon's listener API (JSON-RPC over HTTP) here, backed by a store in the state directory "
                        "(default: off)")
    parser.add_argument("--result-ttl", type=SECONDS, default=24 * 3600.0, metavar="S",
                        help="with --listen-http: keep work-order results this many seconds (default: a day)")
    http_guard.add_arguments(parser)
    add_pending_ttl_argument(parser)
    parser.add_argument("--lease-s", type=SECONDS, default=10.0, help=argparse.SUPPRESS)
    # A worker host sharing a PostgreSQL store with others (listeners run apart: `listener`).
    add_store_argument(parser, required=False)
    parser.add_argument("--heartbeat-s", type=SECONDS, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--stale-after-s", type=SECONDS, default=30.0, help=argparse.SUPPRESS)


def _check_order_rules(args: argparse.Namespace) -> None:
    from .models import MAX_ID_DIGITS, is_id

    if args.worker_id is not None and not is_id(args.worker_id):
        raise UsageError(f"--worker-id must be a hex id of at most {MAX_ID_DIGITS} digits, e.g. the SHA-256 the "
                         "requesters address this worker by")
    if args.replay_window_s and args.workers > 1 and os.path.isdir(args.attestation_root):
        # Under Gramine each worker process is an enclave of its own: no memory is shared.
        raise UsageError("--replay-window-s inside Gramine needs --workers 1 (or 0): enclaves share no "
                         "memory, so each process would remember only its own orders")
    if args.listen_http:
        try:
            front_door.split_listen(args.listen_http)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _check_bind(bind: str) -> None:
    """Bind `bind` once and let it go: a mistyped address, or a port in use, is reported before
    a new identity is made (the pool binds it again to serve)."""
    try:
        sock, _ = listen(bind)
    except EndpointError as exc:
        raise UsageError(f"cannot serve on {exc}") from None
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    sock.close()
    if isinstance(path, str) and path:  # not Linux's abstract namespace: a file was made
        Path(path).unlink(missing_ok=True)


def run_server(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level)
    disable_core_dumps()  # before any private key is in memory
    # Everything the command line can get wrong is checked before an identity is made: a typo
    # on the first start must not leave keys behind.
    _check_order_rules(args)
    config = _pool_config(args)
    # Workloads that keep files (Avalon's wallet and file workloads) get folders here, made on first use.
    data_root = Path(args.state_dir) / "workloads"
    registry = WorkloadRegistry.from_file(args.workloads, data_root) if args.workloads else WorkloadRegistry.builtin(data_root)
    if args.print_code_measurement:
        print(json.dumps(_code_event(args, registry).as_json(), indent=2, sort_keys=True))
        return 0
    attestation = select_provider(args.attestation, args.attestation_root, tsm_report_dir=args.tsm_report_dir)
    _check_bind(args.bind)
    # Bound now and kept: a port in use is reported before an identity is made, and requests
    # wait in its backlog while the front door is started (again).
    http_socket = front_door.bind_listen(args.listen_http) if args.listen_http else None
    try:
        return _serve(args, config, registry, attestation, http_socket)
    finally:
        if http_socket is not None:
            http_socket.close()


def _serve(args: argparse.Namespace, config: PoolConfig, registry: WorkloadRegistry, attestation: Any,
           http_socket: socket.socket | None) -> int:
    metrics = _start_metrics(args)
    identity, created = load_or_create(args.state_dir, args.rsa_bits or DEFAULT_RSA_BITS)
    from .core import insecure_seal_result_reusing_session_iv, seal_result
    from .pool import Pool
    from .processor import Processor
    from .replay import ReplayGuard
    from .signup import signup_function

    logger.info(
        "%s identity %s (RSA-%d) in %s", "created" if created else "loaded", identity.worker_id[:16],
        identity.rsa_bits, args.state_dir,
    )
    if not created and args.rsa_bits and args.rsa_bits != identity.rsa_bits:
        logger.warning("--rsa-bits %d ignored: the identity in %s keeps its RSA-%d key (a new key needs a new "
                       "--state-dir, and requesters must fetch the new signup)", args.rsa_bits, args.state_dir,
                       identity.rsa_bits)
    logger.info("workloads: %s", ", ".join(registry.names()))
    rtmr = None
    if attestation.kind == "tdx":  # once, before any process forks
        event = _code_event(args, registry)
        rtmr = measure.extend_rtmr3(event, args.tdx_measurements_dir, log_dir=args.state_dir, boot_id=measure.read_boot_id())
    if args.insecure_reuse_session_iv:
        logger.warning("--insecure-reuse-session-iv: results are encrypted with a reused AES-GCM nonce")
    processor = Processor(
        identity,
        registry,
        signup_function(identity, attestation, worker_id=args.worker_id, rtmr=rtmr),
        seal=insecure_seal_result_reusing_session_iv if args.insecure_reuse_session_iv else seal_result,
        worker_id=args.worker_id,
        replay_guard=ReplayGuard(args.replay_window_s) if args.replay_window_s else None,
        order_log=orderlog.OrderLog(sys.stderr) if logging.getLogger("avalon_worker.processor").isEnabledFor(logging.INFO) else None,
    )
    stop = StopFlag()
    stop.install()
    door = front_door.front_door_for(args, http_socket)  # the HTTP front door, started once the endpoint is up
    if door is not None:
        door.on_failure = stop.set

    def ready(endpoint: str) -> None:
        logger.info("serving on %s with %s", endpoint, f"{args.workers} worker process(es)" if args.workers else "no worker processes")
        print(READY_PREFIX + endpoint, flush=True)
        if door is not None:
            door.begin(endpoint, time.monotonic())

    try:
        Pool(processor, config, metrics).serve(args.bind, stop=stop, on_ready=ready, helper=door)
    except EndpointError as exc:
        raise UsageError(f"cannot serve on {exc}") from None
    finally:
        if door is not None:
            door.stop()
    if door is not None and door.failure is not None:
        raise door.failure
    if stop.forced:  # a second signal: what was in flight was answered with an error
        return 128 + stop.forced_by if stop.forced_by else 1
    return 0


def _code_event(args: argparse.Namespace, registry: WorkloadRegistry) -> measure.CodeEvent:
    """This worker's code, workloads and behaviour-changing settings, measured (TDX's RTMR3 event)."""
    return measure.timed_measure_code(registry, measure.measured_configuration(vars(args)), registry_file=args.workloads)


def _pool_config(args: argparse.Namespace) -> PoolConfig:
    if args.memory_limit_mb and os.path.isdir(args.attestation_root):  # Gramine's device tree: we run inside Gramine
        raise UsageError("--memory-limit-mb is not enforced inside Gramine (it has no RLIMIT_AS): bound each "
                         "process's memory with the manifest's sgx.enclave_size instead")
    try:
        return PoolConfig(
            workers=args.workers,
            timeout_s=args.timeout_s,
            memory_limit_bytes=args.memory_limit_mb * 1024 * 1024 or None,
            queue_limit=args.queue_limit,
            queue_bytes_limit=4 * args.max_request_bytes,  # four maximal requests may wait
            max_request_bytes=args.max_request_bytes,
            prefetch=not args.no_prefetch,
            pin_cpus=args.pin_cpus,
            spares=args.spare_workers,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _start_metrics(args: argparse.Namespace) -> Any:
    """The Prometheus endpoint of `--metrics-port`, serving already, or None."""
    if not args.metrics_port:
        return None
    from .metrics import PrometheusMetrics

    try:
        metrics = PrometheusMetrics()
        metrics.start(args.metrics_port, args.metrics_addr)
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {args.metrics_addr}:{args.metrics_port}: {exc.strerror}") from None
    return metrics


# requester commands ---------------------------------------------------------------------------


def _add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", type=endpoint_argument, default=DEFAULT_ENDPOINT,
                        help=f"the worker's ZMQ endpoint (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--timeout-s", type=SECONDS, default=DEFAULT_TIMEOUT_S,
                        help="seconds to wait for each reply; the worker is asked to stop an order "
                        "after as long (default %(default)g)")


def run_signup(args: argparse.Namespace) -> int:
    with WorkerClient(args.endpoint, args.timeout_s, on_wait=say) as client:
        worker = client.worker()
    print(json.dumps(dict(worker.signup), indent=2))
    print(f"encryption key signature: verified (worker id {worker.worker_id})", file=sys.stderr)
    return 0


def _client(args: argparse.Namespace) -> WorkerClient:
    """A client for --endpoint; with --policy, only once the worker has passed attestation."""
    signup = require_attested_worker(args, args.endpoint, timeout=args.timeout_s)
    if signup is not None:
        print(f"worker at {args.endpoint} passed attestation policy {args.policy}", file=sys.stderr)
    return WorkerClient(args.endpoint, args.timeout_s, signup=signup, on_wait=say)


def run_submit(args: argparse.Namespace) -> int:
    key = SigningKey.generate() if args.sign else None
    inputs = [text.encode("utf-8") for text in args.inputs]
    with _client(args) as client:
        outputs = client.submit(args.workload, inputs, requester_key=key, include_data_hash=not args.no_data_hash)
    for output in outputs:
        print(output.decode("utf-8", errors="replace"))
    return 0


def load_work_orders(path: str | Path) -> list[tuple[str, str]]:
    """(workloadId, params) pairs from a file shaped like the original tests/test_work_orders.json."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    orders = document.get("workOrders") if isinstance(document, dict) else None
    if not isinstance(orders, list):
        raise UsageError(f'{path} must hold {{"workOrders": [{{"workloadId": ..., "params": ...}}, ...]}}')
    if not orders:
        raise UsageError(f"{path} has no work orders")
    pairs = []
    for number, order in enumerate(orders, 1):
        if not isinstance(order, dict) or not isinstance(order.get("workloadId"), str):
            raise UsageError(f"{path}: work order {number} has no workloadId")
        params = order.get("params", "")
        pairs.append((order["workloadId"], params if isinstance(params, str) else json.dumps(params)))
    return pairs


def run_orders(client: WorkerClient | ListenerClient, orders: Sequence[tuple[str, str]], out: Any = None, *,
               as_json: bool = False, attested_by: str | None = None) -> int:
    """Send each order and print its row as it completes (see `order_table`), then a summary
    that says what was verified; return how many failed. `attested_by`: the policy the worker
    passed, if it was checked."""
    out = out or sys.stdout
    client.worker()  # fetch and verify the signup before sending any input
    view = JsonLines(out, sys.stderr) if as_json else Table(out, orders, terminal_width(out))
    view.start()
    failures = 0
    started = time.perf_counter()
    for workload, params in orders:
        t0 = time.perf_counter()
        try:
            result = client.submit(workload, [params.encode("utf-8")])[0].decode("utf-8", errors="replace")
            ok = True
        except (WorkOrderFailed, VerificationError) as exc:
            result, ok = str(exc), False
            failures += 1
        view.row(Outcome(workload, params, ok, result, (time.perf_counter() - t0) * 1000))
    total = time.perf_counter() - started
    rate = len(orders) / total if total > 0 else 0.0
    view.summary(f"{len(orders) - failures} of {len(orders)} work orders verified in {total:.2f} s ({rate:.0f} work orders/s)")
    view.summary(_what_was_verified(client, attested_by))
    return failures


def _what_was_verified(client: WorkerClient | ListenerClient, attested_by: str | None) -> str:
    """One line: what "verified" covers for this worker, and what it does not."""
    checked = "signatures and encryption verified"
    if attested_by:
        return f"{checked}; the worker passed attestation policy {attested_by}"
    if not client.worker().signup.get("quote"):
        return f"{checked}; this worker runs without SGX attestation (nothing proves which code ran)"
    return f"{checked}; the worker's SGX quote was not checked (give --policy FILE)"


def run_orders_command(args: argparse.Namespace) -> int:
    orders = load_work_orders(args.file)
    if args.listener:
        return _run_orders_through_listener(args, orders)
    with _client(args) as client:
        failures = run_orders(client, orders, as_json=args.json, attested_by=args.policy)
    return 1 if failures else 0


def _run_orders_through_listener(args: argparse.Namespace, orders: Sequence[tuple[str, str]]) -> int:
    """The orders against `--worker-id`, or against every live worker the listener lists."""
    if args.policy:
        raise UsageError("--policy checks a worker's quote over ZMQ; it cannot be combined with --listener yet")
    ids = [args.worker_id] if args.worker_id else ListenerClient(args.listener, "", args.timeout_s).lookup()
    if not ids:
        raise UsageError(f"the listener {args.listener} lists no live worker")
    failures = 0
    for worker_id in ids:
        say(f"worker {worker_id} through {args.listener}")  # stderr: stdout is the table or the JSON
        with ListenerClient(args.listener, worker_id, args.timeout_s) as client:
            failures += run_orders(client, orders, as_json=args.json)
    return 1 if failures else 0


# demo -----------------------------------------------------------------------------------------


def start_worker_process(
    state_dir: str, extra: Sequence[str] = (), timeout_s: float = 60.0, launcher: Sequence[str] = (sys.executable,),
    stderr: int | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """Start `avalon-worker serve` on a free loopback port; return the process and its endpoint.

    `launcher` runs `-m avalon_worker`: this interpreter by default, or e.g. another one, or
    `gramine-direct MANIFEST`. Its log goes to our standard error unless `stderr` says otherwise.
    """
    command = [*launcher, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", state_dir, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(READY_PREFIX):
            return process, line[len(READY_PREFIX):].strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    process.wait()
    raise UsageError("the demo worker did not start (see its log above)")


def run_demo(args: argparse.Namespace) -> int:
    orders_file = resources.files("avalon_worker").joinpath("data/test_work_orders.json")
    orders = load_work_orders(str(orders_file))
    with tempfile.TemporaryDirectory(prefix="avalon-worker-demo-") as state_dir:
        print("starting a worker with a new identity (this creates its RSA key) ...", flush=True)
        process, endpoint = start_worker_process(state_dir, ["--log-level", "ERROR", "--attestation", "none"])
        try:
            print(f"worker listening on {endpoint}; sending {len(orders)} work orders\n", flush=True)
            with WorkerClient(endpoint, args.timeout_s) as client:
                failures = run_orders(client, orders)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 1 if failures else 0


# entry points ---------------------------------------------------------------------------------


SERVE_DESCRIPTION = (
    "Run the worker: serve EEA Trusted Compute v1.1 work orders on a ZMQ endpoint (the wire protocol of "
    "Hyperledger Avalon's Python worker), in a pool of worker processes that share one identity. The identity "
    "(signing and encryption keys) is created in --state-dir on the first start and loaded on every later one. "
    "Options may also come from a TOML file (--config); the command line overrides it."
)
DEMO_DESCRIPTION = (
    "Start a worker with a new identity in a temporary directory, send it the nine sample work orders of "
    "Avalon's tests/test_work_orders.json, verify each signed, encrypted result, print them and stop the worker. "
    "Nothing is kept; the worker runs without SGX attestation."
)
CONFIG_DESCRIPTION = (
    "Print the configuration `serve` would run with, from its defaults, the --config file and the options "
    "given here, as a TOML file that --config reads back."
)


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The `avalon-worker` parser, and its `serve` and `config` parsers (they take `--config`)."""
    parser = argparse.ArgumentParser(prog="avalon-worker", description="EEA Trusted Compute v1.1 worker and requester tools")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the worker", description=SERVE_DESCRIPTION)
    add_server_arguments(serve)
    serve.set_defaults(func=run_server)

    config = commands.add_parser("config", help="print the effective configuration of `serve` as TOML",
                                 description=CONFIG_DESCRIPTION)
    config.add_argument("--print", action="store_true", required=True,
                        help="print it (with the serve options given here applied)")
    add_server_arguments(config)
    config.set_defaults(func=run_config)

    p = commands.add_parser("signup", help="fetch a worker's signup and verify its encryption-key signature")
    _add_client_arguments(p)
    p.set_defaults(func=run_signup)

    p = commands.add_parser("submit", help="run one work order and print its verified result")
    _add_client_arguments(p)
    p.add_argument("--workload", required=True, help="workload id, e.g. python-hello")
    p.add_argument("--sign", action="store_true", help="sign the request with a fresh requester key")
    p.add_argument("--no-data-hash", action="store_true",
                   help="send no dataHash with the inputs (an unsalted SHA-256 of each, sent in clear: see SECURITY.md)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="the work order's input items (UTF-8 text), one per INPUT, all sent in index order; the "
                   "workload decides what it reads (python-hello greets the first: quote a name with spaces)")
    add_policy_arguments(p)
    p.set_defaults(func=run_submit)

    p = commands.add_parser("run-orders", help="run every work order in a test_work_orders.json file")
    _add_client_arguments(p)
    p.add_argument("file", help='a file like tests/test_work_orders.json: {"workOrders": [...]}')
    p.add_argument("--listener", metavar="URL", help="send the orders through this HTTP listener instead of --endpoint")
    p.add_argument("--worker-id", help="with --listener: the worker to use (default: every live worker it lists)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per order, every value whole (the summary goes to stderr)")
    add_policy_arguments(p)
    p.set_defaults(func=run_orders_command)

    p = commands.add_parser("verify", help="check a worker's or a piece of evidence's SGX, TDX or SNP attestation against a policy")
    add_verify_arguments(p)
    p.set_defaults(func=run_verify)

    add_store_commands(commands)
    add_listener_command(commands)
    add_pump_command(commands)

    p = commands.add_parser("demo", help="start a worker, run the nine sample work orders, stop it",
                            description=DEMO_DESCRIPTION)
    p.add_argument("--timeout-s", type=SECONDS, default=DEFAULT_TIMEOUT_S, help=argparse.SUPPRESS)
    p.set_defaults(func=run_demo)
    return parser, serve, config


def build_parser() -> argparse.ArgumentParser:
    """The `avalon-worker` command line."""
    return _parsers()[0]


def run_config(args: argparse.Namespace) -> int:
    server = argparse.ArgumentParser()
    add_server_arguments(server)
    if args.store:
        store = urllib.parse.urlsplit(args.store)
        if store.password is not None:  # never on the screen: it would end up in files and logs
            user = store.netloc.rpartition("@")[0].partition(":")[0]
            args.store = urllib.parse.urlunsplit(store._replace(netloc=f"{user}@{store.netloc.rpartition('@')[2]}"))
            say("the store's password is not shown: give it in PGPASSWORD or ~/.pgpass")
    print(config_toml(args, server), end="")
    return 0


def _report(exc: Error) -> int:
    print(f"avalon-worker: {exc.diagnostics()}", file=sys.stderr)
    return exc.exit_status


def _run(func: Any, args: argparse.Namespace) -> int:
    try:
        return int(func(args))
    except Error as exc:
        return _report(exc)
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser, serve, config = _parsers()
    try:
        args = parse_with_config(parser, argv, serve, (serve, config))
    except Error as exc:
        return _report(exc)
    return _run(args.func, args)


def wo_processor_main(argv: Sequence[str] | None = None) -> int:
    """The original worker's command: `wo-processor --bind URL --workload FILE`."""
    parser = argparse.ArgumentParser(prog="wo-processor", description="Run the work-order processor (avalon-worker serve)")
    add_server_arguments(parser)
    try:
        args = parse_with_config(parser, argv, parser, (parser,))
    except Error as exc:
        return _report(exc)
    return _run(run_server, args)
