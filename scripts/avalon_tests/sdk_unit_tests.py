"""Run the test cases of Avalon's direct-model SDK unit tests, one by one, in the order their
own `main()` runs them, and print one JSON line per case: {"case", "outcome", "detail"}.

    python sdk_unit_tests.py OLD_AVALON_TREE CONFIG_TOML

OLD_AVALON_TREE is a tree of the Avalon commit whose tests still import (their modules moved
in later commits); CONFIG_TOML is its tcf_connector.toml pointing at the listener under test.
Each case gets a time limit: `test_work_order_get_result` polls `while 'result' not in res`
with no end of its own. Avalon's `main()` stops at the first failure; this runs every case.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

TIME_LIMIT_S = 30
SUITES = [  # (module, class, the cases in the order of its main())
    ("test_worker_registry_jrpc_impl", "TestWorkerRegistryJRPCImpl",
     ["test_worker_register", "test_worker_update", "test_worker_set_status", "test_worker_retrieve",
      "test_worker_lookup", "test_worker_lookup_next"]),
    ("test_work_order_jrpc_impl", "TestWorkOrderJRPCImpl", ["test_work_order_submit", "test_work_order_get_result"]),
    ("test_work_order_encryption_key_jrpc_impl", "TestWorkOrderEncryptionKeyJRPCImpl",
     ["test_encryption_key_get", "test_encryption_key_set"]),
]


class TimeLimit(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise TimeLimit(f"no answer the test accepts within {TIME_LIMIT_S} s")


def run_case(instance: Any, name: str) -> tuple[str, str]:
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        getattr(instance, name)()
        return "PASS", ""
    except AssertionError as exc:
        return "FAIL", str(exc).splitlines()[0] if str(exc) else "assertion failed"
    except TimeLimit as exc:
        return "TIMEOUT", str(exc)
    except Exception as exc:  # an Avalon client that crashes is a result to report, not to stop on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return "ERROR", f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"
    finally:
        signal.alarm(0)


def main() -> int:
    tree, config = Path(sys.argv[1]), sys.argv[2]
    sys.path.insert(0, str(tree / "examples/common/python/connectors/direct/unit_tests"))
    for module_name, class_name, cases in SUITES:
        try:
            instance = getattr(__import__(module_name), class_name)(config)
        except Exception as exc:
            for case in cases:
                print(json.dumps({"case": f"{module_name}.{case}", "outcome": "ERROR",
                                  "detail": f"the test class cannot be set up: {type(exc).__name__}: {exc}"}), flush=True)
            continue
        for case in cases:
            outcome, detail = run_case(instance, case)
            print(json.dumps({"case": f"{module_name}.{case}", "outcome": outcome, "detail": detail}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
