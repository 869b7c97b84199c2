#!/usr/bin/env python3
"""How long `verify_evidence` takes for one piece of evidence of each kind, and (with --flips)
every single-bit flip of a real TDX quote's signed bytes and QE part run through it.

Timed: Intel's real SGX quote and a real TDX quote (tests/data/attestation), each with its
collateral (every check: chain, CRLs, signatures, QE identity, TCB info) and without it (the
signature chain only), and AMD's real Milan SNP report with its VCEK (chain to the pinned ARK,
signature, TCB and chip id; no CRL). Each figure is the median of R rounds of N verifications, in
CPU time per verification (steadier than wall time on a shared machine).

--flips: each bit of the header, TD report and signature data up to the PCK chain (the part
every signature covers), flipped alone; reports how many were refused and that none raised or
passed. (The PEM chain itself is covered exhaustively for SGX in tests/test_attestation_real_quote.py.)

Run by hand: `python benchmarks/verify.py [--count N] [--rounds R] [--flips]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from avalon_worker.attestation import (
    Collateral,
    VerificationReport,
    load_collateral,
    load_snp_collateral,
    verify_evidence,
)
from avalon_worker.attestation.verifier import report as R

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "attestation"
SGX = (DATA / "dcap_qvl_sgx_quote.bin", DATA / "dcap_qvl_sgx_quote_collateral.json", datetime(2025, 6, 20, tzinfo=timezone.utc))
TDX = (DATA / "dcap_qvl_tdx_quote.bin", DATA / "dcap_qvl_tdx_quote_collateral.json", datetime(2025, 6, 20, tzinfo=timezone.utc))
SNP = (DATA / "snp_milan_v2_report.bin", DATA / "snp_milan_vcek.der", datetime(2026, 12, 1, tzinfo=timezone.utc))


def cpu_time_per_call(call: Callable[[], object], count: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(count):
            call()
        samples.append((time.process_time() - start) / count)
    return statistics.median(samples)


def dcap_cases() -> dict[str, Callable[[], VerificationReport]]:
    cases = {}
    for name, (quote_path, collateral_path, now) in (("SGX", SGX), ("TDX", TDX)):
        raw = quote_path.read_bytes()
        collateral = load_collateral(collateral_path)
        cases[f"{name} quote, with collateral"] = lambda raw=raw, c=collateral, now=now: verify_evidence(
            raw, None, collateral=c, now=now
        )
        cases[f"{name} quote, chain and signatures only"] = lambda raw=raw, now=now: verify_evidence(raw, None, now=now)
    report_path, vcek_path, when = SNP
    snp_raw, snp_collateral = report_path.read_bytes(), load_snp_collateral(vcek_path.read_bytes())
    cases["SNP report, VCEK given (ASK and ARK pinned)"] = lambda: verify_evidence(
        snp_raw, None, collateral=snp_collateral, now=when
    )
    return cases


def flips() -> int:
    quote_path, collateral_path, now = TDX
    raw = quote_path.read_bytes()
    collateral = Collateral.from_json(collateral_path.read_text())
    end = raw.index(b"-----BEGIN CERTIFICATE-----")
    refused = raised = 0
    passed: list[tuple[int, int]] = []
    for offset in range(end):
        for bit in range(8):
            altered = bytearray(raw)
            altered[offset] ^= 1 << bit
            try:
                report = verify_evidence(bytes(altered), None, collateral=collateral, now=now)
            except Exception:  # the property under test: count, never hide
                raised += 1
                continue
            if any(s.name != R.STEP_TD_MEASUREMENTS for s in report.failures):
                refused += 1
            else:
                passed.append((offset, bit))
    print(f"TDX quote, {end} bytes before the PCK chain: {end * 8} single-bit flips, "
          f"{refused} refused, {len(passed)} passed, {raised} raised")
    for offset, bit in passed[:10]:
        print(f"  passed: byte {offset} bit {bit}")
    return 1 if passed or raised else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="verifications per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case")
    parser.add_argument("--flips", action="store_true", help="also flip every bit of the TDX quote's signed part")
    args = parser.parse_args()
    for name, call in dcap_cases().items():
        report = call()
        print(f"{name}: {cpu_time_per_call(call, args.count, args.rounds) * 1000:.2f} ms CPU "
              f"({report.tee}, TCB {report.tcb_status})")
    return flips() if args.flips else 0


if __name__ == "__main__":
    sys.exit(main())
