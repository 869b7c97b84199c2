"""`avalon-worker serve` (and the original worker's `wo-processor`): the worker itself.

Everything the command line can get wrong is checked before an identity is made; then the
identity is loaded (or created), the workloads and the attestation provider are set up, and the
pool serves, with the HTTP front door (`front.door`) started beside it once the endpoint is up.
This module, and so every worker process the pool forks, imports nothing of the requester side
or of the verifier (`tests/test_layers.py`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .. import defaults, orderlog
from .._internal.router import EndpointError, listen
from ..attestation import measure
from ..attestation.providers import select_provider
from ..core import insecure_seal_result_reusing_session_iv, seal_result
from ..front import http_guard
from ..front.door import FrontConfig, FrontDoor, bind_listen, split_listen
from ..identity import Identity, disable_core_dumps, load_or_create, lock_state_dir
from ..models import MAX_ID_DIGITS, is_id
from ..pool import Pool, PoolConfig, StopFlag
from ..processor import Processor
from ..replay import ReplayGuard
from ..signup import signup_function
from ..workload.registry import WorkloadRegistry
from .console import READY_PREFIX, UsageError, configure_logging

logger = logging.getLogger("avalon_worker")


def _check_order_rules(args: argparse.Namespace) -> None:
    if args.worker_id is not None and not is_id(args.worker_id):
        raise UsageError(f"--worker-id must be a hex id of at most {MAX_ID_DIGITS} digits, e.g. the SHA-256 the "
                         "requesters address this worker by")
    if args.replay_window_s and args.workers > 1 and os.path.isdir(args.attestation_root):
        # Under Gramine each worker process is an enclave of its own: no memory is shared.
        raise UsageError("--replay-window-s inside Gramine needs --workers 1 (or 0): enclaves share no "
                         "memory, so each process would remember only its own orders")
    if args.listen_http:
        try:
            split_listen(args.listen_http)
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


def run(args: argparse.Namespace) -> int:
    """`avalon-worker serve` (and `wo-processor`)."""
    configure_logging(args.log_level)
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
    _check_bind(args.bind)
    # Bound now and kept: a port in use is reported before an identity is made, and requests
    # wait in its backlog while the front door is started (again).
    http_socket = bind_listen(args.listen_http) if args.listen_http else None
    try:
        # One serve per identity: an existing state directory is taken now, before anything is said
        # or bound; a new one once it is made (`_serve`). Held until this process ends.
        locked = os.path.isdir(args.state_dir)
        if locked:
            lock_state_dir(args.state_dir)
        # After the usage checks: its notice (e.g. "attestation: none") is no news to a command that stops.
        attestation = select_provider(args.attestation, args.attestation_root, tsm_report_dir=args.tsm_report_dir)
        return _serve(args, config, registry, attestation, http_socket, locked)
    finally:
        if http_socket is not None:
            http_socket.close()


def _serve(args: argparse.Namespace, config: PoolConfig, registry: WorkloadRegistry, attestation: Any,
           http_socket: socket.socket | None, locked: bool) -> int:
    metrics = _start_metrics(args)
    identity = _identity(args, locked)
    logger.info("workloads: %s", ", ".join(registry.names()))
    if args.debug_workloads:
        registry.debug = True
        logger.warning("--debug-workloads: a workload that raises is logged with its message and traceback, which "
                       "may hold the orders' plaintext; for testing only")
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
    door = _front_door(args, http_socket)  # the HTTP front door, started once the endpoint is up
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


def _identity(args: argparse.Namespace, locked: bool) -> Identity:
    """The worker's identity from --state-dir (made there on the first start), the directory
    taken first if `run` could not take it yet."""
    if not locked:
        lock_state_dir(args.state_dir)
    identity, created = load_or_create(args.state_dir, args.rsa_bits or defaults.RSA_BITS)
    logger.info(
        "%s identity %s (RSA-%d) in %s", "created" if created else "loaded", identity.worker_id[:16],
        identity.rsa_bits, args.state_dir,
    )
    if not created and args.rsa_bits and args.rsa_bits != identity.rsa_bits:
        logger.warning("--rsa-bits %d ignored: the identity in %s keeps its RSA-%d key (a new key needs a new "
                       "--state-dir, and requesters must fetch the new signup)", args.rsa_bits, args.state_dir,
                       identity.rsa_bits)
    return identity


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
    from ..metrics import PrometheusMetrics

    try:
        metrics = PrometheusMetrics()
        metrics.start(args.metrics_port, args.metrics_addr)
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {args.metrics_addr}:{args.metrics_port}: {exc.strerror}") from None
    return metrics


def _front_door(args: argparse.Namespace, sock: socket.socket | None) -> FrontDoor | None:
    """The front door of `avalon-worker serve`'s options (`sock`: the bound `--listen-http`
    port), not started yet; None without `--listen-http` or `--store`."""
    if not args.listen_http and not args.store:
        return None
    if args.listen_http and not args.insecure_reuse_session_iv:
        logger.warning("--listen-http without --insecure-reuse-session-iv: Avalon's SDK decrypts results with "
                       "sessionKeyIv and cannot read them; clients that read each item's iv can")
    processes = max(args.workers, 1)
    return FrontDoor(FrontConfig(
        endpoint="",  # known once the endpoint is bound: `begin`
        listen=args.listen_http or "",
        store=args.store or args.state_dir,
        max_request_bytes=args.max_request_bytes,
        result_ttl_s=args.result_ttl,
        lease_s=args.lease_s,
        max_in_flight=max(1, min(64, args.queue_limit + processes)),
        log_level=args.log_level,
        heartbeat_s=args.heartbeat_s,
        stale_after_s=args.stale_after_s,
        limits=http_guard.limits_from(args),
        pending_ttl_s=args.pending_ttl,
    ), sock)
