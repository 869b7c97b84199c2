"""The real worker, over ZMQ on 127.0.0.1, driven by the independent requester (pycryptodomex +
python-ecdsa, no code shared with avalon_worker)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import ecdsa
import pytest

import independent_requester as ir
from conftest import RunningWorker, launch_worker


@pytest.fixture(scope="module")
def signup(worker: RunningWorker) -> dict:
    return ir.fetch_signup(worker.endpoint)


def run(worker: RunningWorker, signup: dict, workload: str, items: list[ir.ItemSpec], **options) -> list[bytes]:
    frame, ctx = ir.build_work_order(signup, workload, items, **options)
    return ir.open_response(ir.send(worker.endpoint, frame, timeout_ms=60000), ctx)


def test_hello_as_the_original_client_sends_it(worker: RunningWorker, signup: dict) -> None:
    items = [ir.ItemSpec(b"Krsna", own_iv=False, data_hash="")]
    assert run(worker, signup, "python-hello", items, minimal=True, inner_id="1") == [b"Hello Krsna"]


def test_fib(worker: RunningWorker, signup: dict) -> None:
    assert run(worker, signup, "python-fib", [ir.ItemSpec(b"15")]) == [b"Fibonacci number at position 15 = 610"]


def test_echo_with_mixed_plaintext_session_and_data_key_items(worker: RunningWorker, signup: dict) -> None:
    items = [ir.ItemSpec(b"plain|", mode="plain"), ir.ItemSpec(b"keyed|", mode="data-key"),
             ir.ItemSpec(b"session|"), ir.ItemSpec(b"shared-iv", own_iv=False)]
    assert run(worker, signup, "echo-result", items) == [b"plain|keyed|session|shared-iv"]


def test_items_sent_out_of_index_order(worker: RunningWorker, signup: dict) -> None:
    items = [ir.ItemSpec(b"c", index=2), ir.ItemSpec(b"a", index=0, mode="plain"), ir.ItemSpec(b"b", index=1)]
    assert run(worker, signup, "echo-result", items) == [b"abc"]


def test_without_session_key_iv_the_iv_is_a_prefix(worker: RunningWorker, signup: dict) -> None:
    items = [ir.ItemSpec(b"Rama", own_iv=False)]
    assert run(worker, signup, "python-hello", items, session_key_iv=False) == [b"Hello Rama"]


@pytest.mark.parametrize("s_form", ["low", "high"])
def test_requester_signature_low_and_high_s(worker: RunningWorker, signup: dict, s_form: str) -> None:
    assert run(worker, signup, "python-hello", [ir.ItemSpec(b"Sita")], sign=True, s_form=s_form) == [b"Hello Sita"]


def test_a_forged_requester_signature_is_refused(worker: RunningWorker, signup: dict) -> None:
    frame, ctx = ir.build_work_order(signup, "python-hello", [ir.ItemSpec(b"x")], sign=True)
    ctx.request["params"]["verifyingKey"] = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1).get_verifying_key().to_pem().decode()
    with pytest.raises(ir.ReplyError) as raised:
        ir.open_response(ir.send(worker.endpoint, ir.frame(ctx.request)), ctx)
    assert raised.value.code == 4


@pytest.mark.parametrize("hex_style", ["upper", "0x"])
def test_upper_case_and_0x_ids_are_hashed_as_sent(worker: RunningWorker, signup: dict, hex_style: str) -> None:
    assert run(worker, signup, "python-hello", [ir.ItemSpec(b"Uma")], hex_style=hex_style, sign=True) == [b"Hello Uma"]


@pytest.mark.parametrize(
    "ids", [{"workOrderId": "0x1abcd"}, {"workOrderId": "0Xfff", "workerId": "0x123", "requesterId": "7"}],
    ids=["demo-py-style", "all-odd"],
)
def test_odd_length_and_0x_ids_as_avalons_schema_allows(worker: RunningWorker, signup: dict, ids: dict) -> None:
    frame, ctx = ir.build_work_order(signup, "python-hello", [ir.ItemSpec(b"Odd")], sign=True, ids=ids)
    reply = ir.send(worker.endpoint, frame, timeout_ms=60000)
    assert ir.open_response(reply, ctx) == [b"Hello Odd"]
    assert {name: reply["result"][name] for name in ids} == ids  # echoed exactly as sent


def test_string_and_integer_ids_are_echoed(worker: RunningWorker, signup: dict) -> None:
    for inner_id in ("1", 424242):
        assert run(worker, signup, "python-hello", [ir.ItemSpec(b"id")], inner_id=inner_id) == [b"Hello id"]


@pytest.mark.parametrize("mode", ["", "null", "-", ir.DATA_KEY])
def test_requested_output_modes(worker: RunningWorker, signup: dict, mode: str) -> None:
    out = [{"index": 0, "dataHash": "", "data": "", "encryptedDataEncryptionKey": mode, "iv": ""}]
    assert run(worker, signup, "python-hello", [ir.ItemSpec(b"out")], out_data=out) == [b"Hello out"]


def test_one_mebibyte_input(worker: RunningWorker, signup: dict) -> None:
    payload = os.urandom(1024 * 1024)
    assert run(worker, signup, "echo-result", [ir.ItemSpec(payload)]) == [payload]


def test_legacy_mode_output_decrypts_with_the_session_iv(tmp_path: Path) -> None:
    legacy = launch_worker(tmp_path, ["--insecure-reuse-session-iv"])
    try:
        signup = ir.fetch_signup(legacy.endpoint)
        frame, ctx = ir.build_work_order(signup, "python-hello", [ir.ItemSpec(b"old client")])
        reply = ir.send(legacy.endpoint, frame)
        item = reply["result"]["outData"][0]
        assert item["iv"] == ""
        data = base64.b64decode(item["data"])
        assert ir.aes_gcm_decrypt(ctx.session_key, ctx.session_key_iv, data) == b"Hello old client"
        with pytest.raises(ir.VerificationError):
            ir.open_response(reply, ctx)  # the independent requester refuses a reused IV by default
        assert ir.open_response(reply, ctx, allow_iv_reuse=True) == [b"Hello old client"]
    finally:
        legacy.stop()


def test_default_mode_never_reuses_a_request_iv(worker: RunningWorker, signup: dict) -> None:
    frame, ctx = ir.build_work_order(signup, "echo-result", [ir.ItemSpec(b"a"), ir.ItemSpec(b"b", own_iv=False)])
    reply = ir.send(worker.endpoint, frame)
    assert ir.open_response(reply, ctx) == [b"ab"]  # open_response fails on any IV the request used
    assert reply["result"]["outData"][0]["iv"] not in ("", ctx.session_key_iv.hex())
