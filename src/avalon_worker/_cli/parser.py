"""The command lines' parsers: every command, its options, and the module that runs it.

Each command's parser names its module (`RUNS`: `avalon_worker._cli.<module>`, whose
`run(args)` carries it out); `main` imports that module only once the command is chosen. So
this module imports nothing but the standard library, the defaults and the option types:
`--help` of any command, and `serve` with every process it forks, load no other command's code.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import __version__, defaults
from .options import (
    COUNT,
    PORT_OR_OFF,
    POSITIVE_COUNT,
    SECONDS,
    SECONDS_OR_OFF,
    Parser,
    add_config_argument,
    add_log_level_argument,
    endpoint_argument,
    listener_argument,
    parse_time,
)

RUNS = "command_module"  # the destination that holds the chosen command's module
NEEDS_STORE = "needs_store"  # set for the commands that cannot run without --store

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


# Each command's --help ends with these (tests/test_cli_help.py parses every one of them).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "serve": ("avalon-worker serve --bind 'tcp://*:7777' --state-dir ./state",
              "avalon-worker serve --config worker.toml --workers 4",
              "avalon-worker serve --state-dir ./state --listen-http 127.0.0.1:1947"),
    "config": ("avalon-worker config --config worker.toml",
               "avalon-worker config --workers 4 > worker.toml"),
    "signup": ("avalon-worker signup --endpoint tcp://127.0.0.1:7777 > signup.json",
               "avalon-worker signup --listener http://127.0.0.1:1947/"),
    "submit": ("avalon-worker submit --endpoint tcp://127.0.0.1:7777 --workload python-hello World",
               "avalon-worker submit --listener http://127.0.0.1:1947/ --workload echo-result --input-file big.txt",
               "cat data.bin | avalon-worker submit --workload echo-result --input-file - --json"),
    "result": ("avalon-worker result --listener http://127.0.0.1:1947/ 3f2a9c01",),
    "run-workload": ("avalon-worker run-workload python-hello World",
                     "avalon-worker run-workload --workloads ./workloads.json my-workload --input-file in.txt"),
    "run-orders": ("avalon-worker run-orders --endpoint tcp://127.0.0.1:7777 tests/test_work_orders.json",
                   "avalon-worker run-orders --listener http://127.0.0.1:1947/ --json orders.json | jq .result",
                   "avalon-worker run-orders --endpoint tcp://worker:7777 --policy policy.json orders.json"),
    "verify": ("avalon-worker verify --print-policy-template --tee tdx > policy.json",
               "avalon-worker verify --endpoint tcp://worker:7777 --policy policy.json --collateral collateral.json",
               "avalon-worker verify --evidence quote.bin --policy policy.json --at 2025-06-20 --json"),
    "store": ("avalon-worker store migrate --store postgresql://avalon@db.example:5432/avalon",),
    "listener": ("AVALON_WORKER_STORE=postgresql://avalon@db:5432/avalon avalon-worker listener --listen-http 0.0.0.0:1947",),
    "pump": ("avalon-worker pump --store postgresql://avalon@db:5432/avalon --endpoint tcp://127.0.0.1:7777",),
    "demo": ("avalon-worker demo",),
    "completion": ("avalon-worker completion bash > ~/.local/share/bash-completion/completions/avalon-worker",
                   "avalon-worker completion zsh > ~/.zfunc/_avalon-worker   # with fpath+=(~/.zfunc) in .zshrc"),
}


class HelpWithExamples(argparse.HelpFormatter):
    """argparse's help, with the examples epilog kept line by line (descriptions still wrap)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return text
        return super()._fill_text(text, width, indent)


def _add_examples(commands: Any) -> None:
    for name, command in commands.choices.items():
        command.formatter_class = HelpWithExamples
        command.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "avalon-worker")


# serve ----------------------------------------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `serve` (and `wo-processor`, and `config --print`): one list, which the
    README's table and configuration files are checked against."""
    add_config_argument(parser)
    parser.add_argument("--bind", default=defaults.BIND, help=f"ZMQ endpoint to listen on (default {defaults.BIND})")
    # `--workload` is the original worker's spelling (wo-processor --workload FILE)
    parser.add_argument("--workloads", "--workload", dest="workloads", metavar="FILE",
                        help="workloads.json registry (default: built-in workloads)")
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("AVALON_WORKER_STATE_DIR") or default_state_dir(),
        help="where the worker's identity is kept (default $AVALON_WORKER_STATE_DIR or %(default)s)",
    )
    parser.add_argument(
        "--rsa-bits", type=int, choices=defaults.RSA_BITS_ALLOWED,
        help=f"size of a newly created encryption key (default {defaults.RSA_BITS}); an existing key is kept",
    )
    parser.add_argument(
        "--max-request-bytes", type=POSITIVE_COUNT, default=defaults.MAX_REQUEST_BYTES,
        help="larger requests are refused (default %(default)s, room for a 16 MiB input)",
    )
    parser.add_argument(
        "--insecure-reuse-session-iv", action="store_true",
        help="INSECURE legacy mode: encrypt results under the request's sessionKeyIv, as the original worker did, "
        "for old clients that ignore each item's iv. The same AES-GCM key and nonce then protect the request "
        "hash, the inputs and the outputs: anyone who sees the traffic can recover plaintext. Use only with such clients.",
    )
    parser.add_argument(
        "--attestation", choices=defaults.ATTESTATION_MODES, default="auto",
        help="evidence provider: gramine (SGX, /dev/attestation), tdx or snp (a confidential VM's configfs-tsm), "
        "none, or auto-detect (default)",
    )
    parser.add_argument("--attestation-root", default=defaults.ATTESTATION_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--tsm-report-dir", default=defaults.TSM_REPORT_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--print-code-measurement", action="store_true",
                        help="print the code event a TDX worker with these options extends into RTMR3 (what it "
                        "measured and the digest), and exit")
    parser.add_argument("--tdx-measurements-dir", default=defaults.TDX_MEASUREMENTS_DIR, help=argparse.SUPPRESS)
    parser.add_argument(
        "--workers", type=COUNT, default=len(os.sched_getaffinity(0)),
        help="worker processes behind the endpoint (default: usable cores, %(default)s); "
        "0 runs orders in this process, one at a time, without isolation or time limits",
    )
    parser.add_argument("--timeout-s", type=SECONDS,
                        help=f"time limit of a workload (default {defaults.TIMEOUT_S:g}; a request's smaller "
                        "responseTimeoutMSecs wins)")
    parser.add_argument("--memory-limit-mb", type=COUNT, default=0,
                        help="address-space limit of each worker process, interpreter included (default: none)")
    parser.add_argument("--queue-limit", type=COUNT, default=defaults.QUEUE_LIMIT,
                        help="requests that may wait for a free process; more are answered BUSY (default %(default)s)")
    parser.add_argument("--spare-workers", type=COUNT,
                        help=f"warm processes kept ready to replace one that is lost (default {defaults.SPARE_WORKERS})")
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
    parser.add_argument("--debug-workloads", action="store_true",
                        help="log the exception and traceback of a workload that raises (for its author: the message "
                        "may hold the order's data; default: only its type, in the reply and the log)")
    parser.add_argument("--listen-http", metavar="HOST:PORT",
                        help="also serve Avalon's listener API (JSON-RPC over HTTP) here, backed by a store in the state directory "
                        "(default: off)")
    parser.add_argument("--result-ttl", type=SECONDS, default=defaults.RESULT_TTL_S, metavar="S",
                        help="with --listen-http: keep work-order results this many seconds (default: a day)")
    add_http_arguments(parser)
    add_pending_ttl_argument(parser)
    parser.add_argument("--lease-s", type=SECONDS, default=defaults.LEASE_S, help=argparse.SUPPRESS)
    # A worker host sharing a PostgreSQL store with others (listeners run apart: `listener`).
    add_store_argument(parser, required=False)
    parser.add_argument("--heartbeat-s", type=SECONDS, default=defaults.HEARTBEAT_S, help=argparse.SUPPRESS)
    parser.add_argument("--stale-after-s", type=SECONDS, default=defaults.STALE_AFTER_S, help=argparse.SUPPRESS)


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the front door's `HttpLimits`, for `serve` and `listener`."""
    parser.add_argument("--http-max-connections", type=POSITIVE_COUNT, default=defaults.HTTP_MAX_CONNECTIONS, metavar="N",
                        help="HTTP connections served at once; at the cap a new one closes the longest-idle one, or is "
                        "answered 503 (default %(default)s, and at most the descriptor limit less 64)")
    parser.add_argument("--http-header-timeout-s", type=SECONDS, default=defaults.HTTP_HEADER_TIMEOUT_S, metavar="S",
                        help="a request's headers must be complete this many seconds after its first byte, or its "
                        "connection is closed (default %(default)s)")
    parser.add_argument("--http-idle-timeout-s", type=SECONDS, default=defaults.HTTP_IDLE_TIMEOUT_S, metavar="S",
                        help="an HTTP connection without a request is closed after this many seconds (default %(default)s)")
    parser.add_argument("--http-body-budget-bytes", type=COUNT, default=0, metavar="N",
                        help="request bodies held at once, all HTTP connections together; a body still arriving beyond "
                        f"it is answered BUSY (default 0: {defaults.HTTP_BODY_BUDGET_REQUESTS} x --max-request-bytes)")


def add_pending_ttl_argument(parser: argparse.ArgumentParser) -> None:
    """`--pending-ttl`, for every command that keeps orders in a store."""
    parser.add_argument("--pending-ttl", type=SECONDS, default=defaults.PENDING_TTL_S, metavar="S",
                        help="an order that waited this many seconds for a worker that has been off-line as long ends "
                        "with an error its requester reads (default %(default)g: an hour)")


def add_store_argument(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """`--store LOCATION`, defaulting to `$AVALON_WORKER_STORE` (where a URL with a password
    is better kept than on a command line, which every user of the host can read)."""
    parser.add_argument(
        "--store", default=os.environ.get(defaults.STORE_ENV) or None,
        help=f"the work-order store: a SQLite file or postgresql://user@host:port/database "
        f"(default ${defaults.STORE_ENV}; the password may come from PGPASSWORD or ~/.pgpass)",
    )
    if required:  # checked once parsed (`main.run`), so that the message can name the variable
        parser.set_defaults(**{NEEDS_STORE: True})


# requester commands ---------------------------------------------------------------------------


def add_client_arguments(parser: argparse.ArgumentParser, *, every_worker: bool = False) -> None:
    """`--endpoint` or `--listener` (one transport or the other, the same rules for both),
    `--worker-id` and `--timeout-s`: the commands that talk to a worker."""
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--endpoint", type=endpoint_argument, metavar="URL",
                           help=f"the worker's ZMQ endpoint (default {defaults.ENDPOINT})")
    transport.add_argument("--listener", type=listener_argument, metavar="URL",
                           help="go through this HTTP listener instead (Avalon's listener API, e.g. "
                           "http://127.0.0.1:1947/: `serve --listen-http` or `avalon-worker listener`)")
    parser.add_argument("--worker-id", metavar="HEX",
                        help="with --listener: the worker to use (default: "
                        f"{'every live worker it lists' if every_worker else 'the one live worker it lists'})")
    parser.add_argument("--timeout-s", type=SECONDS, default=defaults.CLIENT_TIMEOUT_S,
                        help="seconds to wait for each reply, and to retry while nothing listens; the worker is "
                        "asked to stop an order after as long (default %(default)g)")


def add_policy_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """Add ``--policy``, ``--collateral`` and the insecure test roots (for submit/run-orders too)."""
    parser.add_argument("--policy", metavar="FILE", required=required,
                        help="JSON attestation policy, a section per TEE the worker may run on "
                        "(`avalon-worker verify --print-policy-template --tee sgx|tdx|snp` prints one to start from; "
                        "the format: docs/attestation.md, \"The policy file\")")
    parser.add_argument(
        "--collateral",
        metavar="FILE",
        help="SGX and TDX: Intel's JSON collateral (TCB info, QE identity, CRLs), to check revocation and TCB "
        "status offline; SNP: a PEM bundle with the VCEK or VLEK, ASK or ASVK, ARK and any CRLs (the formats: "
        "docs/attestation.md, \"Collateral\")",
    )
    parser.add_argument(
        "--insecure-root-ca",
        metavar="FILE",
        help="trust this root CA instead of Intel's pinned SGX Root CA (testing only: INSECURE)",
    )
    parser.add_argument(
        "--insecure-amd-root",
        metavar="FILE",
        help="trust this ARK instead of AMD's pinned roots for SNP (testing only: INSECURE)",
    )


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Configure the ``verify`` subcommand's parser."""
    parser.add_argument("--print-policy-template", action="store_true",
                        help="print a minimal policy to edit for --tee (default sgx) and exit")
    parser.add_argument("--tee", choices=defaults.TEES,
                        help="with --print-policy-template: the TEE whose section to print (default sgx)")
    parser.add_argument("--sigstruct", metavar="FILE",
                        help="with --print-policy-template: the policy for the SGX enclave signed in this .sig "
                        "file (its MRENCLAVE, MRSIGNER, ISVPRODID and ISVSVN filled in)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--endpoint", metavar="URL", type=endpoint_argument,
                        help="worker ZMQ endpoint, e.g. tcp://host:7777")
    source.add_argument("--signup", metavar="FILE", help="a saved signup JSON document")
    source.add_argument("--evidence", metavar="FILE",
                        help="evidence on its own: an SGX or TDX quote or an SNP report (raw binary or hex)")
    add_policy_arguments(parser)
    parser.add_argument(
        "--nonce",
        metavar="HEX",
        help="with --signup: the nonce the signup was requested with "
        "(default: none, so REPORT_DATA must end in zeros)",
    )
    parser.add_argument("--report-data", metavar="HEX",
                        help="with --evidence: the 64 bytes REPORT_DATA must be (default: not checked)")
    parser.add_argument("--event-log", metavar="FILE",
                        help="TDX: the TD's CCEL event log (/sys/firmware/acpi/tables/data/CCEL), replayed "
                        "against the quote's RTMRs")
    parser.add_argument("--at", metavar="TIME", type=parse_time,
                        help="verify as of this time (ISO 8601, UTC unless a zone is given), e.g. to audit old "
                        "evidence with the collateral of its day (default: now)")
    parser.add_argument(
        "--timeout-s", type=SECONDS, default=defaults.CLIENT_TIMEOUT_S,
        help="seconds to wait for the signup (default %(default)g)",
    )
    parser.add_argument(
        "--save-signup", metavar="FILE", help="with --endpoint: write the fetched signup here"
    )
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON (with tee, measurements and report_data)")


def _add_requester_commands(commands: Any) -> None:
    p = commands.add_parser("signup", help="fetch a worker's signup and verify its encryption-key signature")
    add_client_arguments(p)
    p.set_defaults(**{RUNS: "signup"})

    p = commands.add_parser("submit", help="run one work order and print its verified result")
    add_client_arguments(p)
    p.add_argument("--workload", required=True, help="workload id, e.g. python-hello")
    p.add_argument("--sign", action="store_true", help="sign the request with a fresh requester key")
    p.add_argument("--no-data-hash", action="store_true",
                   help="send no dataHash with the inputs (an unsalted SHA-256 of each, sent in clear: see SECURITY.md)")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="the work order's input items (UTF-8 text), one per INPUT, all sent in index order; the "
                   "workload decides what it reads (python-hello greets the first: quote a name with spaces)")
    p.add_argument("--input-file", action="append", metavar="FILE",
                   help="one more input item: the bytes of FILE (- reads standard input); repeatable, each after "
                   "the INPUTs, in order")
    p.add_argument("--json", action="store_true",
                   help='print {"workOrderId", "workerId", "outputs": [{"text"} or {"base64"}, ...]} as one JSON object')
    add_policy_arguments(p)
    p.set_defaults(**{RUNS: "submit"})

    p = commands.add_parser("result", help="read, verify and decrypt the result of an order sent through a listener")
    add_client_arguments(p)
    p.add_argument("work_order_id", metavar="ID",
                   help="the work order's id (or its first digits), as submit --json and run-orders show it")
    p.set_defaults(**{RUNS: "result"})

    p = commands.add_parser("run-workload", help="run a workload here on plain inputs, without a worker (for its author)")
    p.add_argument("workload", metavar="NAME", help="the workload's id in the registry, e.g. python-hello")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="input items (UTF-8 text), one per INPUT, in index order")
    p.add_argument("--input-file", action="append", metavar="FILE",
                   help="one more input item: the bytes of FILE (- reads standard input); repeatable")
    p.add_argument("--workloads", metavar="FILE",
                   help="workloads.json registry, as serve --workloads (default: built-in workloads)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where a workload that keeps files keeps them (default: a temporary directory)")
    p.set_defaults(**{RUNS: "run_workload"})

    p = commands.add_parser("run-orders", help="run every work order in a test_work_orders.json file")
    add_client_arguments(p, every_worker=True)
    p.add_argument("file", help='a file like tests/test_work_orders.json: {"workOrders": [...]}')
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per order, every value whole (the summary goes to stderr)")
    add_policy_arguments(p)
    p.set_defaults(**{RUNS: "run_orders"})

    p = commands.add_parser("verify", help="check a worker's or a piece of evidence's SGX, TDX or SNP attestation against a policy")
    add_verify_arguments(p)
    p.set_defaults(**{RUNS: "verify"})


# the shared store's commands ------------------------------------------------------------------


def _add_store_commands(commands: Any) -> None:
    parser = commands.add_parser("store", help="manage the durable work-order store")
    actions = parser.add_subparsers(dest="store_action", required=True, metavar="ACTION")
    migrate = actions.add_parser(
        "migrate", help="create or upgrade the store's schema (workers and listeners also do this when they start)"
    )
    add_store_argument(migrate, required=True)
    migrate.set_defaults(**{RUNS: "store"})


def _add_listener_command(commands: Any) -> None:
    parser = commands.add_parser(
        "listener", help="serve Avalon's listener API (JSON-RPC over HTTP) for every worker in a shared PostgreSQL store"
    )
    add_store_argument(parser, required=True)
    parser.add_argument("--listen-http", required=True, metavar="HOST:PORT", help="where to serve HTTP (port 0: any free port)")
    parser.add_argument("--max-request-bytes", type=POSITIVE_COUNT, default=defaults.MAX_REQUEST_BYTES,
                        help="larger work orders are refused (default %(default)s); as the workers' own limit")
    parser.add_argument("--max-pending", type=POSITIVE_COUNT, default=defaults.MAX_PENDING,
                        help="pending work orders per worker; more are answered BUSY (default %(default)s)")
    parser.add_argument("--stale-after-s", type=SECONDS, default=defaults.STALE_AFTER_S,
                        help="a worker without a heartbeat for this long is shown as off-line and left out of "
                        "WorkerLookUp (default %(default)s)")
    add_http_arguments(parser)
    add_pending_ttl_argument(parser)
    add_log_level_argument(parser)
    parser.set_defaults(**{RUNS: "listener"})


def _add_pump_command(commands: Any) -> None:
    parser = commands.add_parser(
        "pump", help="pull one worker's orders from a shared store and run them through its ZMQ endpoint"
    )
    add_store_argument(parser, required=True)
    parser.add_argument("--endpoint", required=True, help="the worker's ZMQ endpoint, e.g. tcp://127.0.0.1:7777")
    parser.add_argument("--max-request-bytes", type=POSITIVE_COUNT, default=defaults.MAX_REQUEST_BYTES,
                        help="as the worker's own limit (default %(default)s)")
    parser.add_argument("--max-in-flight", type=POSITIVE_COUNT, default=defaults.PUMP_MAX_IN_FLIGHT,
                        help="orders sent to the worker and not yet answered (default %(default)s; about "
                        "twice its worker processes)")
    parser.add_argument("--result-ttl", type=SECONDS, default=defaults.RESULT_TTL_S, metavar="S",
                        help="keep work-order results this many seconds (default: a day)")
    add_pending_ttl_argument(parser)
    parser.add_argument("--lease-s", type=SECONDS, default=defaults.LEASE_S, help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat-s", type=SECONDS, default=defaults.HEARTBEAT_S, help=argparse.SUPPRESS)
    add_log_level_argument(parser)
    parser.set_defaults(**{RUNS: "pump"})


# the command lines ----------------------------------------------------------------------------


def build() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The `avalon-worker` parser, and its `serve` and `config` parsers (they take `--config`)."""
    parser = Parser(prog="avalon-worker", description="EEA Trusted Compute v1.1 worker and requester tools")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the worker", description=SERVE_DESCRIPTION)
    add_server_arguments(serve)
    serve.set_defaults(**{RUNS: "serve"})

    config = commands.add_parser("config", help="print the effective configuration of `serve` as TOML",
                                 description=CONFIG_DESCRIPTION)
    config.add_argument("--print", action="store_true",
                        help="print it, with the serve options given here applied (what `config` does anyway)")
    add_server_arguments(config)
    config.set_defaults(**{RUNS: "config"})

    _add_requester_commands(commands)
    _add_store_commands(commands)
    _add_listener_command(commands)
    _add_pump_command(commands)

    p = commands.add_parser("demo", help="start a worker, run the nine sample work orders, stop it",
                            description=DEMO_DESCRIPTION)
    p.add_argument("--timeout-s", type=SECONDS, default=defaults.CLIENT_TIMEOUT_S, help=argparse.SUPPRESS)
    p.set_defaults(**{RUNS: "demo"})

    p = commands.add_parser("completion", help="print a shell completion script for avalon-worker (bash or zsh)",
                            description="Print a completion script for bash or zsh, made from this program's own "
                            "commands and options.")
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(**{RUNS: "completion"})
    _add_examples(commands)
    return parser, serve, config


def build_wo_processor() -> argparse.ArgumentParser:
    """The original worker's command: `wo-processor --bind URL --workload FILE` (`serve`'s options)."""
    parser = Parser(prog="wo-processor", description="Run the work-order processor (avalon-worker serve)")
    add_server_arguments(parser)
    parser.set_defaults(**{RUNS: "serve"})
    return parser
