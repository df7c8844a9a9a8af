"""CSV files: the header, how cells map to JSON, rows rejected with their line numbers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from onehazel.importer.reading import InputError, Record, read_records, scan


def csv_records(
    tmp_path: Path, text: str | bytes, *, kind: str = "entities", after_line: int = 0
) -> list[Record]:
    path = tmp_path / "data.csv"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return list(
        read_records(scan(path), kind=kind, fmt="csv", after_line=after_line, event_id=lambda line, raw: "")
    )


def items(records: list[Record]) -> list[dict[str, Any] | None]:
    return [r.item for r in records]


def test_entity_rows_become_items_with_attributes(tmp_path: Path) -> None:
    got = csv_records(
        tmp_path,
        "type, externalId ,email,vip:boolean,rtp:number,age:integer,min_bet:decimal,address:json,note\n"
        'player,p-1,a@example.com,TRUE,96.5,42,0.10,"{""city"": ""Valletta""}", spaced \n'
        "player,p-2,,false,1e2,-7,10,null,\n",
    )
    assert items(got) == [
        {
            "type": "player",
            "externalId": "p-1",
            "attributes": {
                "email": "a@example.com",
                "vip": True,
                "rtp": 96.5,
                "age": 42,
                "min_bet": "0.10",
                "address": {"city": "Valletta"},
                "note": " spaced ",  # text is sent exactly as written
            },
        },
        {
            "type": "player",
            "externalId": "p-2",
            # the empty cells (email, note) are absent; json null is sent (it removes an attribute)
            "attributes": {"vip": False, "rtp": 100.0, "age": -7, "min_bet": "10", "address": None},
        },
    ]
    assert [(r.first_line, r.last_line) for r in got] == [(2, 2), (3, 3)]


def test_decimal_text_stays_exact(tmp_path: Path) -> None:
    got = csv_records(tmp_path, "externalId,type,min_bet\ng-1,game,12345678901234567890.10\n")
    assert items(got) == [
        {"externalId": "g-1", "type": "game", "attributes": {"min_bet": "12345678901234567890.10"}}
    ]


def test_state_rows(tmp_path: Path) -> None:
    got = csv_records(
        tmp_path,
        "externalId,key,value,timestamp\np-1,balance,250.00,2026-03-01T12:00:00Z\np-1,kyc_status,verified,\n",
        kind="states",
    )
    assert items(got) == [
        {"externalId": "p-1", "key": "balance", "value": "250.00", "timestamp": "2026-03-01T12:00:00Z"},
        {"externalId": "p-1", "key": "kyc_status", "value": "verified"},  # no timestamp: absent
    ]


def test_a_typed_value_column_for_states(tmp_path: Path) -> None:
    got = csv_records(tmp_path, "externalId,key,value:number\np-1,risk_score,0.75\n", kind="states")
    assert items(got) == [{"externalId": "p-1", "key": "risk_score", "value": 0.75}]


def test_bad_rows_are_rejected_alone_with_their_line(tmp_path: Path) -> None:
    got = csv_records(
        tmp_path,
        b"externalId,type,vip:boolean,age:integer\n"
        b"p-1,player,true,1\n"
        b"p-2,player,yes,1\n"  # not a boolean
        b"p-3,player\n"  # too few cells
        b"\n"  # blank: skipped
        b'p-4,player,"true\nfalse",1\n'  # a quoted newline: one row over two lines
        b"p-5,player,true,1.5\n"
        b"p-\xff,player,true,x\n"
        b"p-7,pl\xffyer,true,1\n"
        b"p-8,player,false,2\n",
    )
    summary = [(r.first_line, r.last_line, r.reject and (r.reject.external_id, r.reject.code)) for r in got]
    assert summary == [
        (2, 2, None),
        (3, 3, ("p-2", "invalid_csv_value")),
        (4, 4, (None, "invalid_csv_row")),
        (6, 7, ("p-4", "invalid_csv_value")),
        (8, 8, ("p-5", "invalid_csv_value")),
        (9, 9, ("p-\ufffd", "invalid_csv_value")),
        (10, 10, ("p-7", "invalid_csv_value")),
        (11, 11, None),
    ]
    messages = [r.reject.message for r in got if r.reject]
    assert messages[:3] == [
        "vip: expected true or false",
        "the row has 2 cells, the header 4",
        "vip: expected true or false",
    ]
    assert messages[5] == "type: not valid UTF-8"


def test_resume_skips_rows_up_to_the_confirmed_line(tmp_path: Path) -> None:
    text = "externalId,type\n" + "".join(f"p-{n},player\n" for n in range(5))
    got = csv_records(tmp_path, text, after_line=4)
    assert [r.item and r.item["externalId"] for r in got] == ["p-3", "p-4"]


@pytest.mark.parametrize(
    ("kind", "header", "message"),
    [
        ("entities", "", "no header row"),
        ("entities", "externalId,kind\n", "lacks the column(s) type"),
        ("entities", "externalId,type,email,email\n", "names the column 'email' twice"),
        ("entities", "externalId,type,,email\n", "an empty column name"),
        ("entities", "externalId,type,vip:bool\n", "unknown column type 'bool'"),
        ("entities", "externalId:integer,type\n", "the column 'externalId' is always text"),
        ("states", "externalId,key\n", "lacks the column(s) value"),
        ("states", "externalId,key,value,source\n", "unexpected column 'source'"),
        ("events", "externalId,type\n", "use NDJSON"),
    ],
)
def test_an_unusable_header_stops_the_whole_file(
    tmp_path: Path, kind: str, header: str, message: str
) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        csv_records(tmp_path, header + "p-1,player\n" if header else "\n\n", kind=kind)
