"""Run Hyperledger Avalon's own test programs against a live `avalon-worker serve --listen-http`,
and report every test case. Started by `scripts/avalon-tests.sh`, which builds Avalon's Python
environment first; see docs/avalon.md.

    python run.py AVALON_CHECKOUT AVALON_PYTHON OUT_DIR

- `tests/Demo.py` over the five request folders Avalon's CI feeds it, each answer judged
  against what Avalon's own listener answers for that file;
- the SDK's direct-model unit tests, from the newest Avalon commit where they still import;
- `examples/apps/generic_client` as `tools/run_tests.sh` runs it (echo, heart-disease-eval,
  plain text), and for inside-out-eval and simple-wallet as their READMEs do.

Outcomes: PASS; AVALON FAILS TOO (Avalon's own listener or client fails the same case; the
report says where in Avalon's code); FAIL. The exit status is 1 if any case FAILs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avalon_worker._cli.console import READY_PREFIX
from avalon_worker._cli.demo import read_ready

HERE = Path(__file__).resolve().parent
# The newest Avalon commit whose SDK direct-model unit tests import: the next one on the main
# line (b6823b9, 2020-01-17) moved the modules they import into client_sdk/.
UNIT_TESTS_COMMIT = "3cc57226ab7395454f48e8ecf05f5ecb07dd70cd"
WORKER_NAME = "singleton-worker-1"  # tools/run_tests.sh addresses the worker by this name
FOLDERS = ["json_requests", "worker", "work_orders", "signature", "workorder_receipt"]

PASS, AVALON_TOO, FAIL = "PASS", "AVALON FAILS TOO", "FAIL"
HEART_47 = "You have a 47% risk of heart disease"
HEART_71 = "You have a 71% risk of heart disease"


@dataclass(frozen=True)
class Expect:
    """What Avalon's listener (cf762fd) answers for a request file: "result", "accepted" (a
    result or 5, pending), or an error code; `decrypted` what the result opens to."""

    answer: str | int
    why: str = ""
    decrypted: tuple[str, ...] = ()


REFUSED_METHOD = ("Avalon's listener refuses it before dispatch: the method is not in the enum of "
                  "common/python/schema_validation/data/tc_methods.json:22-33 (registry writes were removed in "
                  "f1cc38c; EncryptionKeySet always raised 'Operation is not supported'); no authentication guards that API")
RECEIPTS_2 = "Avalon's listener answers 2 too: the file fails its WorkOrderReceipt*.json schema ({})"
DEMO: dict[str, dict[str, Expect]] = {
    "json_requests": {
        "json_01.json": Expect("result"), "json_02.json": Expect("result"), "json_03.json": Expect("accepted"),
        "json_04.json": Expect("result", decrypted=(HEART_47,)),  # items 1 (71%) then 2 (47%): the last answers
        "json_05.json": Expect(2, "no receipt was created for the order (tcs_workorder_receipt_handler.py:400-406 answers 2)"),
        "json_06.json": Expect("accepted"), "json_07.json": Expect("result", decrypted=("Hello world",)),
        "json_08.json": Expect("accepted"), "json_09.json": Expect("result", decrypted=("Hello world",)),
        "json_10.json": Expect("accepted"), "json_11.json": Expect("result", decrypted=(HEART_71,)),
        "json_12.json": Expect("accepted"), "json_13.json": Expect("result", decrypted=(HEART_71,)),
    },
    "worker": {
        "worker_01.json": Expect(2, REFUSED_METHOD),
        "worker_01a.json": Expect(2, "worker 123 is not registered (tcs_worker_registry_handler.py:202-205)"),
        "worker_02.json": Expect(2, REFUSED_METHOD), "worker_03.json": Expect(2, REFUSED_METHOD),
        "worker_04.json": Expect(2, "worker 123 is not registered (tcs_worker_registry_handler.py:202-205)"),
        "worker_05.json": Expect(2, "workerType 123 is outside WorkerLookUp.json:6-8's enum [1, 2, 3]"),
    },
    "work_orders": {
        "01_worker_lookup.json": Expect("result"), "01a_worker_retrieve.json": Expect("result"),
        "02_work_order_encryptionkey_get.json": Expect(2, REFUSED_METHOD),
        "03_work_order_encryptionkey_set.json": Expect(2, REFUSED_METHOD),
        "04_work_order_submit.json": Expect("accepted"),
        "05_work_order_get_result.json": Expect("result", decrypted=(HEART_71,)),
    },
    "signature": {
        "wo_request_01.json": Expect("result"), "wo_request_02.json": Expect("result"),
        "wo_request_03.json": Expect("accepted"), "wo_request_04.json": Expect("result", decrypted=(HEART_71,)),
        "wo_request_05.json": Expect(2, "no receipt was created for the order (tcs_workorder_receipt_handler.py:400-406)"),
    },
    "workorder_receipt": {
        "workorderreceipt_01.json": Expect(2, RECEIPTS_2.format("requesterId 'r_id' is not hex: WorkOrderReceiptCreate.json:24-26")),
        "workorderreceipt_02.json": Expect(2, RECEIPTS_2.format("updaterId 'u1' is not hex: WorkOrderReceiptUpdate.json:11-13")),
        "workorderreceipt_02a.json": Expect(2, RECEIPTS_2.format("updaterId 'u1' is not hex: WorkOrderReceiptUpdate.json:11-13")),
        "workorderreceipt_02b.json": Expect(2, RECEIPTS_2.format("updaterId 'u2' is not hex: WorkOrderReceiptUpdate.json:11-13")),
        "workorderreceipt_03.json": Expect(2, RECEIPTS_2.format(
            "Demo.py sets workOrderId to the last submitted id, None in this folder: WorkOrderReceiptRetrieve.json:6-8")),
        "workorderreceipt_04.json": Expect("result", "Avalon answers an empty lookup (tcs_workorder_receipt_handler.py:305-345)"),
        "workorderreceipt_05.json": Expect(2, RECEIPTS_2.format("requesterId 'r_id' is not hex: WorkOrderReceiptCreate.json:24-26")),
        "workorderreceipt_07.json": Expect(2, RECEIPTS_2.format(
            "workerServiceId and lastLookUpTag are numbers: WorkOrderReceiptLookUpNext.json:6-8, 16-18")),
        "workorderreceipt_08.json": Expect(2, RECEIPTS_2.format("updaterId 'u1' is not hex: WorkOrderReceiptUpdateRetrieve.json:11-13")),
    },
}
UNIT_TESTS_AVALON_TOO = {
    "test_worker_registry_jrpc_impl.test_worker_register": REFUSED_METHOD,
    "test_worker_registry_jrpc_impl.test_worker_update": REFUSED_METHOD,
    "test_worker_registry_jrpc_impl.test_worker_set_status": REFUSED_METHOD,
    "test_worker_registry_jrpc_impl.test_worker_retrieve": "it expects the worker test_worker_register registered, which "
    "Avalon's listener refuses to register (above); WorkerRetrieve then answers 2 (tcs_worker_registry_handler.py:202-205)",
    "test_worker_registry_jrpc_impl.test_worker_lookup": "it expects the worker test_worker_register registered (above), "
    "so Avalon's lookup finds none too",
    "test_work_order_jrpc_impl.test_work_order_get_result": "the order it polls for was refused at submit: workerId \"\" "
    "and payloadFormat \"pformat\" fail WorkOrderSubmit.json:10-14, 28-31 in Avalon's listener too, whose "
    "WorkOrderGetResult then answers 2 (tcs_work_order_handler.py:172-175) to a loop that stops only on a result",
}

# Where Avalon's own client fails before it talks to a listener (a marker in its traceback).
CLIENT_BUGS = {
    "NameError: name 'req_hash' is not defined": "Avalon's SDK cannot sign a request: WorkOrderParams."
    "add_requester_signature (sdk/avalon_sdk/work_order/work_order_params.py:181-182) uses req_hash and status, "
    "which it never defines, so generic_client -rs crashes before sending (Demo.py's signed orders pass above)",
}


def _record(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _method(entry: dict[str, Any]) -> str:
    request = entry.get("request")
    try:
        return str(json.loads(request).get("method")) if isinstance(request, str) else ""
    except ValueError:
        return ""


def _shown(response: Any) -> str:
    if not isinstance(response, dict):
        return repr(response)[:120]
    if "result" in response:
        return "result"
    error = response.get("error") or {}
    return f"error {error.get('code')}: {str(error.get('message'))[:100]}"


def judge(expect: Expect, response: Any, decrypted: list[str] | None) -> tuple[str, str]:
    answer = response if isinstance(response, dict) else {}
    code = (answer.get("error") or {}).get("code") if "error" in answer else None
    if expect.answer == "accepted":
        ok = "result" in answer or code == 5
    elif expect.answer == "result":
        ok = "result" in answer and (not expect.decrypted or tuple(decrypted or ()) == expect.decrypted)
    else:
        ok = code == expect.answer
    if ok:
        return PASS, expect.why
    return FAIL, f"expected {expect.answer}{' ' + repr(expect.decrypted) if expect.decrypted else ''}, got {decrypted!r}"


class Run:
    def __init__(self, avalon: Path, python: str, out: Path) -> None:
        self.avalon, self.python, self.out = avalon, python, out
        self.rows: list[tuple[str, str, str, str]] = []  # (group, case, outcome, detail)
        self.url = ""

    def env(self, record: Path | None, tcf_home: Path, *paths: Path) -> dict[str, str]:
        env = dict(os.environ, TCF_HOME=str(tcf_home), PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python", PYTHONDONTWRITEBYTECODE="1",
                   PYTHONPATH=os.pathsep.join(str(p) for p in (HERE, *paths)))
        env.pop("AVALON_TESTS_RECORD", None)
        if record is not None:
            env["AVALON_TESTS_RECORD"] = str(record)
        return env

    def avalon_paths(self) -> list[Path]:
        a = self.avalon
        return [a / "common/python", a / "common/crypto_utils", a / "sdk",
                a / "common/verify_report_utils/ias", a / "common/verify_report_utils/dcap"]

    def add(self, group: str, case: str, outcome: str, detail: str = "") -> None:
        self.rows.append((group, case, outcome, detail))
        print(f"{outcome:16} {group} {case} {detail}"[:220], flush=True)

    def demo(self) -> None:
        for folder in FOLDERS:
            record = self.out / f"demo-{folder}.jsonl"
            record.unlink(missing_ok=True)
            command = [self.python, "Demo.py", "--logfile", "__screen__", "--loglevel", "warn",
                       "--input_dir", f"{self.avalon / 'tests' / folder}/", "--connect_uri", self.url,
                       "work_orders/output.json"]
            done = subprocess.run(command, cwd=self.avalon / "tests", env=self.env(record, self.avalon, *self.avalon_paths()),
                                  capture_output=True, text=True, timeout=600)
            (self.out / f"demo-{folder}.log").write_text(done.stdout + done.stderr)
            entries = _record(record)
            for name in sorted(os.listdir(self.avalon / "tests" / folder)):
                method = json.loads((self.avalon / "tests" / folder / name).read_text())["method"]
                response, decrypted = None, None
                while entries and _method(entries[0]) != method:
                    entries.pop(0)
                while entries and _method(entries[0]) == method:  # WorkOrderGetResult polls while pending
                    response = entries.pop(0)["response"]
                    if method != "WorkOrderGetResult":
                        break
                if entries and "decrypted" in entries[0]:
                    decrypted = entries.pop(0)["decrypted"]
                expect = DEMO.get(folder, {}).get(name, Expect("result"))
                outcome, detail = judge(expect, response, decrypted)
                self.add(f"Demo.py {folder}", f"{name} {method}", outcome, f"[{_shown(response)}] {detail}".strip())
            self.add(f"Demo.py {folder}", "exit status", PASS if done.returncode == 0 else FAIL,
                     f"Demo.py exited {done.returncode}")

    def unit_tests(self, scratch: Path) -> None:
        group = f"SDK unit tests @{UNIT_TESTS_COMMIT[:7]}"
        tree = scratch / "avalon-unit-tests"
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(self.avalon), "archive", UNIT_TESTS_COMMIT], capture_output=True)
        if archive.returncode != 0:
            self.add(group, "all", FAIL, f"the checkout has no commit {UNIT_TESTS_COMMIT[:7]} (a shallow clone?): "
                     "clone Avalon with its history")
            return
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        config = tree / "examples/common/python/connectors/tcf_connector.toml"
        config.write_text(config.read_text().replace("http://localhost:1947", self.url.rstrip("/")))
        done = subprocess.run([self.python, str(HERE / "sdk_unit_tests.py"), str(tree), str(config)],
                              env=self.env(None, tree, tree / "examples/common/python"),
                              capture_output=True, text=True, timeout=900)
        (self.out / "sdk-unit-tests.log").write_text(done.stdout + done.stderr)
        for line in done.stdout.splitlines():
            case = json.loads(line)
            outcome, detail = case["outcome"], case["detail"]
            if outcome != PASS and case["case"] in UNIT_TESTS_AVALON_TOO:
                outcome, detail = AVALON_TOO, f"{detail}; {UNIT_TESTS_AVALON_TOO[case['case']]}"
            self.add(group, case["case"], outcome if outcome in (PASS, AVALON_TOO) else FAIL, detail)

    def generic_client(self) -> None:
        group = "generic_client"
        runs = [  # (case, arguments, expected decrypted outputs); tools/run_tests.sh's three first
            ("echo-result (run_tests.sh)", ["--workload_id", "echo-result", "--in_data", "Hello"], ["Hello"]),
            ("heart-disease-eval (run_tests.sh)", ["--workload_id", "heart-disease-eval", "--in_data",
                                                   "Data: 25 10 1 67  102 125 1 95 5 10 1 11 36 1"], [HEART_47]),
            ("echo-result plain text -p (run_tests.sh)", ["--workload_id", "echo-result", "--in_data", "Hello", "-p"], ["Hello"]),
            ("echo-result signed -rs", ["--workload_id", "echo-result", "--in_data", "Signed", "-rs"], ["Signed"]),  # see below
            ("inside-out-eval write (README)", ["--workload_id", "inside-out-eval", "--in_data", "write avalon-tests.txt Hi"],
             ["RESULT: FILE WRITE SUCCESS"]),
            ("inside-out-eval read (README)", ["--workload_id", "inside-out-eval", "--in_data", "read avalon-tests.txt"],
             ["RESULT: Hi"]),
            ("simple-wallet deposit alice (README)", ["--workload_id", "simple-wallet", "--in_data", "deposit alice 100"],
             ["WALLET RESULT: alice::100"]),
            ("simple-wallet deposit bob (README)", ["--workload_id", "simple-wallet", "--in_data", "deposit bob 100"],
             ["WALLET RESULT: bob::100"]),
            ("simple-wallet withdraw (README)", ["--workload_id", "simple-wallet", "--in_data", "withdraw alice 100"],
             ["WALLET RESULT: alice::0"]),
            ("simple-wallet transfer (README)", ["--workload_id", "simple-wallet", "--in_data", "transfer alice bob 50"],
             ["WALLET RESULT: No sufficient balance in debitor's account"]),
            ("simple-wallet two items", ["--workload_id", "simple-wallet", "--in_data", "deposit carol 7", "withdraw carol 2"],
             ["WALLET RESULT: carol::7", "WALLET RESULT: carol::5"]),
        ]
        client = self.avalon / "examples/apps/generic_client"
        for n, (case, arguments, expected) in enumerate(runs):
            record = self.out / f"generic-client-{n}.jsonl"
            record.unlink(missing_ok=True)
            command = [self.python, "generic_client.py", "--uri", self.url, "--worker_id", WORKER_NAME, *arguments, "-o"]
            done = subprocess.run(command, cwd=client, env=self.env(record, self.avalon, *self.avalon_paths()),
                                  capture_output=True, text=True, timeout=300)
            (self.out / f"generic-client-{n}.log").write_text(done.stdout + done.stderr)
            decrypted = [entry["decrypted"] for entry in _record(record) if "decrypted" in entry]
            got = decrypted[-1] if decrypted else None
            ok = done.returncode == 0 and got == expected
            known = next((why for marker, why in CLIENT_BUGS.items() if not ok and marker in done.stderr), "")
            self.add(group, case, PASS if ok else AVALON_TOO if known else FAIL,
                     f"exit {done.returncode}, decrypted {got!r}{'; ' + known if known else ''}")
        self.receipt_option(client)

    def receipt_option(self, client: Path) -> None:
        # generic_client -r asks for a receipt; Avalon's own client fails before sending it. Run
        # again with that request mended (sitecustomize.py), the rest of its receipt flow runs:
        # create, retrieve, the last update, and Avalon's check of the update's signature.
        for mended in (False, True):
            case = "echo-result -r (receipt)" + (", Avalon's receipt request mended" if mended else "")
            name = "generic-client-receipt" + ("-mended" if mended else "")
            record = self.out / f"{name}.jsonl"
            record.unlink(missing_ok=True)
            command = [self.python, "generic_client.py", "--uri", self.url, "--worker_id", WORKER_NAME,
                       "--workload_id", "echo-result", "--in_data", "Receipt", "-r"]
            env = self.env(record, self.avalon, *self.avalon_paths())
            if mended:
                env["AVALON_TESTS_MEND_RECEIPT"] = "1"
            done = subprocess.run(command, cwd=client, env=env, capture_output=True, text=True, timeout=300)
            (self.out / f"{name}.log").write_text(done.stdout + done.stderr)
            exchanges = _record(record)
            sent = [_method(entry) for entry in exchanges if "request" in entry]
            crashed = "Traceback" in done.stderr and "WorkOrderReceiptCreate" not in sent
            last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [""]
            verified = "receipt retrieve signature verification successful" in done.stdout + done.stderr
            answers = [_shown(entry.get("response")) for entry in exchanges if "request" in entry][-4:]
            ok = done.returncode == 0 and "WorkOrderReceiptCreate" in sent and verified
            outcome = AVALON_TOO if crashed and not mended else PASS if ok else FAIL
            detail = (f"exit {done.returncode}; {last[0][:150]}; Avalon's client crashes before sending WorkOrderReceiptCreate: "
                      "work_order_receipt.py puts bytes into the request (the signature of sign_message, :114-115; the "
                      "key's PEM, :90), which json.dumps cannot encode") if outcome == AVALON_TOO else (
                      f"exit {done.returncode}; sent {sent}; answers {answers}; "
                      f"Avalon's verify_update_receipt_signature {'passed' if verified else 'did not pass'}")
            self.add("generic_client", case, outcome, detail)

    def report(self) -> int:
        lines = ["| group | case | outcome | detail |", "|---|---|---|---|"]
        lines += [f"| {g} | {c} | {o} | {d.replace('|', '/')} |" for g, c, o, d in self.rows]
        counts = {o: sum(1 for row in self.rows if row[2] == o) for o in (PASS, AVALON_TOO, FAIL)}
        summary = ", ".join(f"{n} {o}" for o, n in counts.items())
        (self.out / "report.md").write_text("\n".join(lines) + f"\n\n{summary}\n")
        print(f"\navalon-tests: {len(self.rows)} cases: {summary} (report: {self.out / 'report.md'})")
        return 1 if counts[FAIL] else 0


def start_worker(state: Path) -> tuple[subprocess.Popen[str], str]:
    worker_id = hashlib.sha256(WORKER_NAME.encode()).hexdigest()  # hex_utils.get_worker_id_from_name
    command = [sys.executable, "-m", "avalon_worker", "serve", "--bind", "tcp://127.0.0.1:*", "--state-dir", str(state),
               "--listen-http", "127.0.0.1:0", "--insecure-reuse-session-iv", "--attestation", "none",
               "--worker-id", worker_id, "--log-level", "WARNING"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    _, url = read_ready(process, READY_PREFIX)
    return process, url


def main() -> int:
    avalon, python, out = Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="avalon-tests-") as scratch:
        process, url = start_worker(Path(scratch) / "state")
        run = Run(avalon, python, out)
        run.url = url
        try:
            run.demo()
            run.unit_tests(Path(scratch))
            run.generic_client()
        finally:
            process.terminate()
            process.wait(60)
    return run.report()


if __name__ == "__main__":
    sys.exit(main())
