"""The requester's side of attestation: evidence and signups checked against a policy, offline.

Public: `verify` (`verify_evidence`, `verify_signup`, `detect_tee`), `policy`, `report`,
`collateral`, `snp` and `policy_template`. The parsers and the step-by-step checks they run on
are private (`_quote`, `_dcap`, …); `avalon_worker.attestation` lists the names callers need.
Nothing of the worker side is imported here, nor by any module of this package.
"""
