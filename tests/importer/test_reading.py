"""Reading NDJSON files: identity, line numbers, malformed lines, derived eventIds, exact numbers."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from onehazel.client import Client
from onehazel.importer import reading
from onehazel.importer.batches import batch_key, batches, event_id
from onehazel.importer.numbers import loads
from onehazel.importer.reading import InputError, Record, read_records, scan


def records(path: Path, *, kind: str = "events", after_line: int = 0) -> list[Record]:
    source = scan(path)
    return list(
        read_records(
            source,
            kind=kind,
            fmt="ndjson",
            after_line=after_line,
            event_id=lambda line, content: event_id(source.sha256, line, content),
        )
    )


def event(n: int = 0, **extra: Any) -> dict[str, Any]:
    return {"externalId": f"p-{n}", "type": "transaction", "data": {"amount": "1.00"}, **extra}


def test_the_identity_is_the_content_not_the_path(tmp_path: Path) -> None:
    content = b'{"a": 1}\n{"a": 2}'
    (tmp_path / "one.ndjson").write_bytes(content)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "two.jsonl").write_bytes(content)

    one, two = scan(tmp_path / "one.ndjson"), scan(tmp_path / "other" / "two.jsonl")

    assert one.sha256 == two.sha256 == hashlib.sha256(content).hexdigest()
    assert (one.lines, one.size) == (2, len(content))  # a last line without a newline still counts
    (tmp_path / "one.ndjson").write_bytes(content + b"\n")
    assert scan(tmp_path / "one.ndjson").sha256 != two.sha256


def test_derived_event_ids_are_stable_and_documented(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_text(
        json.dumps(event(1)) + "\n" + json.dumps(event(2, eventId="own-2")) + "\n", encoding="utf-8"
    )
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    line = json.dumps(event(1)).encode()

    first, second = records(path)

    assert first.item is not None
    assert first.item["eventId"] == "imp_" + hashlib.sha256(f"v1:{sha}:1:".encode() + line).hexdigest()[:32]
    assert second.item is not None
    assert second.item["eventId"] == "own-2"
    assert [r.item for r in records(path)] == [first.item, second.item]  # the same on every run


def test_only_events_get_an_event_id(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_text(
        json.dumps({"externalId": "p", "type": "player", "attributes": {}}) + "\n", encoding="utf-8"
    )
    (record,) = records(path, kind="entities")
    assert record.item == {"externalId": "p", "type": "player", "attributes": {}}


def test_malformed_lines_are_rejected_with_their_line_number(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_bytes(
        b"\xef\xbb\xbf"  # a byte order mark is not part of the first line
        + json.dumps(event(1)).encode()
        + b"\r\n"
        + b"\n   \n"  # blank lines are skipped, not rejected
        + b'{"externalId": "p", \n'
        + b'"\xff\xfe"\n'
        + b"[1, 2]\n"
        + b'{"a": NaN}\n'
        + b"null\n"
        + json.dumps(event(9)).encode()
    )

    got = [(r.first_line, r.item is not None, r.reject and r.reject.code) for r in records(path)]

    assert got == [
        (1, True, None),
        (4, False, "invalid_json"),
        (5, False, "invalid_encoding"),
        (6, False, "invalid_item"),
        (7, False, "invalid_json"),
        (8, False, "invalid_item"),
        (9, True, None),
    ]
    rejects = [r.reject for r in records(path) if r.reject]
    assert rejects[0].message.startswith("not valid JSON: ")
    assert rejects[2].message == "expected a JSON object, got an array"
    assert all(r.external_id is None for r in rejects)


def test_a_line_too_long_is_rejected_and_reading_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading, "MAX_LINE_BYTES", 100)
    monkeypatch.setattr(reading, "_CHUNK", 16)
    path = tmp_path / "e.ndjson"
    long = json.dumps(event(2, data={"note": "x" * 500}))
    path.write_text("\n".join([json.dumps(event(1)), long, json.dumps(event(3))]) + "\n", encoding="utf-8")

    got = [
        (r.first_line, r.reject.code if r.reject else r.item and r.item["externalId"]) for r in records(path)
    ]

    assert got == [(1, "p-1"), (2, "line_too_long"), (3, "p-3")]


def test_resume_skips_the_confirmed_lines(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_text("".join(json.dumps(event(n)) + "\n" for n in range(10)), encoding="utf-8")
    all_ids = [r.item and r.item["eventId"] for r in records(path)]
    later = records(path, after_line=6)
    assert [r.first_line for r in later] == [7, 8, 9, 10]
    assert [r.item and r.item["eventId"] for r in later] == all_ids[6:]


@pytest.mark.parametrize(
    ("problem", "message"),
    [("missing", "no such file"), ("directory", "is a directory")],
)
def test_unreadable_files_are_input_errors(tmp_path: Path, problem: str, message: str) -> None:
    path = tmp_path / "data.ndjson"
    if problem == "directory":
        path.mkdir()
    with pytest.raises(InputError, match=message):
        scan(path)


@pytest.mark.parametrize(
    ("literal", "sent"),
    [
        ("10.5", "10.5"),
        ("10.50", "10.5"),  # the same value: a float holds it exactly
        ("0.1", "0.1"),
        ("1e3", "1000.0"),
        ("12345678901234567890.12", '"12345678901234567890.12"'),  # more digits than a float: exact string
        ("123456789012345678901234567890", "123456789012345678901234567890"),
        ("-0.000000000000000000001234567890123456789", '"-0.000000000000000000001234567890123456789"'),
    ],
)
def test_numbers_reach_the_request_body_with_their_exact_value(literal: str, sent: str) -> None:
    bodies: list[bytes] = []

    def server(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(202, json={"jobId": "job_1", "status": "queued", "total": 1})

    with Client("oh_live_test", "http://importer.test", transport=httpx.MockTransport(server)) as client:
        client.submit_batch("states", [loads(f'{{"externalId": "p", "key": "balance", "value": {literal}}}')])

    assert bodies == [f'{{"states":[{{"externalId":"p","key":"balance","value":{sent}}}]}}'.encode()]
    value = json.loads(bodies[0], parse_float=Decimal)["states"][0]["value"]
    assert Decimal(value) == Decimal(literal)


def test_batches_cover_consecutive_lines_and_count_rejects(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    lines = [json.dumps(event(n)) for n in range(7)]
    lines[2] = "{broken"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    got = [(b.first_line, b.last_line, list(b.lines), len(b.rejects)) for b in batches(records(path), size=3)]

    assert got == [(1, 3, [1, 2], 1), (4, 6, [4, 5, 6], 0), (7, 7, [7], 0)]


def test_batch_keys_name_the_file_kind_and_lines() -> None:
    key = batch_key("ab" * 32, kind="events", fmt="ndjson", first_line=1, last_line=5000)
    assert key == batch_key("ab" * 32, kind="events", fmt="ndjson", first_line=1, last_line=5000)
    assert key.startswith("imp_")
    assert len(key) == 44
    others = {
        batch_key("cd" * 32, kind="events", fmt="ndjson", first_line=1, last_line=5000),
        batch_key("ab" * 32, kind="states", fmt="ndjson", first_line=1, last_line=5000),
        batch_key("ab" * 32, kind="events", fmt="ndjson", first_line=1, last_line=4999),
        batch_key("ab" * 32, kind="events", fmt="ndjson", first_line=2, last_line=5000),
    }
    assert key not in others
    assert len(others) == 4
