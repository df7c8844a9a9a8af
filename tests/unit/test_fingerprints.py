"""Fingerprints are stored beside every event and job: their format must never drift.

A fingerprint computed differently for the same write would turn every later exact
replay of a stored event into a 409 conflict, so the construction is pinned here.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from onehazel.crypto.fingerprints import Fingerprinter

OLD, NEW = b"o" * 32, b"n" * 32
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
sources = st.dictionaries(st.text(max_size=12), json_values, max_size=6)


def documented(version: int, secret: bytes, source: dict[str, Any]) -> str:
    """``s<version>.`` + hex keyed BLAKE2b-256 of the sorted-key JSON (the module's docstring)."""
    message = orjson.dumps(source, option=orjson.OPT_SORT_KEYS)
    return f"s{version}." + hashlib.blake2b(message, key=secret, digest_size=32).hexdigest()


@given(sources)
def test_a_fingerprint_is_the_documented_keyed_hash(source: dict[str, Any]) -> None:
    fingerprints = Fingerprinter({1: OLD, 2: NEW})
    assert fingerprints.of(source) == documented(2, NEW, source)
    assert fingerprints.of(source) == documented(2, NEW, source)  # no state carried between calls
    assert fingerprints.of(dict(reversed(list(source.items())))) == documented(2, NEW, source)


@given(sources, sources)
def test_same_recognises_its_own_and_older_secrets_only(
    source: dict[str, Any], other: dict[str, Any]
) -> None:
    fingerprints = Fingerprinter({1: OLD, 2: NEW})
    equal = orjson.dumps(other, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        source, option=orjson.OPT_SORT_KEYS
    )
    for stored in (documented(1, OLD, source), documented(2, NEW, source)):
        assert fingerprints.same(source, stored)
        assert fingerprints.same(source, stored, computed=fingerprints.of(source))
        assert fingerprints.same(other, stored) == equal
    assert not fingerprints.same(source, documented(3, NEW, source))  # no such secret here
    assert not fingerprints.same(source, documented(1, NEW, source))  # version 1 is another secret
    assert not Fingerprinter({2: NEW}).same(source, documented(1, OLD, source))
