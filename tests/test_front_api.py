"""The listener API's size bound (`front.api.wrapped_size`) against the frame the pump really
sends: a work order's body carried as a JSON string."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from avalon_worker import jsonio
from avalon_worker.front.api import WRAP_OVERHEAD_BYTES, fits_wrapped, wrapped_size

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)


@given(value=_JSON, indent=st.sampled_from([None, 1, "\t", "\r\n"]))
def test_the_bound_holds_and_is_exact_for_any_json_body(value: object, indent: object) -> None:
    text = json.dumps(value, ensure_ascii=False, indent=indent)  # whitespace of every kind JSON allows
    body = text.encode("utf-8")
    carried = jsonio.dumps(text)  # the body as a JSON string, as the frame to the worker holds it
    assert wrapped_size(body) - WRAP_OVERHEAD_BYTES == len(carried) - 2


@given(body=_JSON.map(lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8")), slack=st.integers(-64, 64))
def test_fits_wrapped_agrees_with_the_exact_size_at_every_limit(body: bytes, slack: int) -> None:
    limit = max(0, wrapped_size(body) + slack)
    assert fits_wrapped(body, limit) == (wrapped_size(body) <= limit)
