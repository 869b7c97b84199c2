"""The request's hex and base64 fields are decoded by hand-tuned code on every order; these
properties hold it to the standard library's rules, on arbitrary text."""

from __future__ import annotations

import base64
import binascii
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avalon_worker.errors import InvalidParameterError
from avalon_worker.models import decode_base64, decode_hex, is_hex

HEXISH = st.text(alphabet=string.hexdigits + "xX0 \n\t-g", max_size=40)
BASE64ISH = st.text(alphabet=string.ascii_letters + string.digits + "+/= \n-_é", max_size=40)


def reference_hex(text: str) -> bytes | None:
    """An even number of hex digits after an optional 0x, nothing else."""
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    if len(digits) % 2 or any(c not in string.hexdigits for c in digits):
        return None
    return bytes.fromhex(digits)


def reference_base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


@settings(max_examples=2000)
@given(st.one_of(HEXISH, st.builds(lambda s: "0x" + s, HEXISH)))
def test_hex_fields_follow_the_reference_rule(text: str) -> None:
    expected = reference_hex(text)
    assert is_hex(text) == (expected is not None)
    if expected is None:
        with pytest.raises(InvalidParameterError, match="not valid hex"):
            decode_hex(text, "field")
    else:
        assert decode_hex(text, "field") == expected


@settings(max_examples=2000)
@given(st.one_of(BASE64ISH, st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode())))
def test_base64_fields_follow_the_standard_library(text: str) -> None:
    expected = reference_base64(text)
    if expected is None:
        with pytest.raises(InvalidParameterError, match="not valid base64"):
            decode_base64(text, "field")
    else:
        assert decode_base64(text, "field") == expected
