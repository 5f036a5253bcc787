"""Encoded queries of the ServiceNow sandbox, parsed and matched without HTTP: every operator
spelling (the `NOTLIKE` / `NOTIN` forms too), `gs.dateGenerate`, and what is dropped as invalid."""

from __future__ import annotations

import pytest

from sandboxes.servicenow.store import parse_query

COLUMNS = {"sys_id", "name", "other", "qty", "code", "sys_updated_on"}
ROWS = [
    {"sys_id": "1", "name": "Acme Supply", "other": "Acme Supply", "qty": "2", "code": "A"},
    {"sys_id": "2", "name": "ACME STEEL", "other": "", "qty": "10", "code": "B"},
    {"sys_id": "3", "name": "Bolt", "other": "x", "qty": "", "code": ""},
]


def matching(text: str) -> list[str]:
    query = parse_query(text, COLUMNS)
    return [row["sys_id"] for row in ROWS if query.matches(row)]


@pytest.mark.parametrize(("text", "expected"), [
    ("nameNOTLIKEsupply", ["2", "3"]),
    ("nameNOT LIKEsupply", ["2", "3"]),
    ("codeNOTINA,B", ["3"]),
    ("codeNOT INA", ["2", "3"]),
    ("nameSAMEASother", ["1"]),
    ("nameNSAMEASother", ["2", "3"]),
    ("qtyANYTHING", ["1", "2", "3"]),
    ("qtyBETWEEN2@9", ["1"]),
    ("qty>5", ["2"]),  # numbers compare as numbers; a blank value never meets an ordering
    ("qty<5", ["1"]),
    ("qty!=2", ["2", "3"]),
    ("nameSTARTSWITHacme^ORqtyISEMPTY", ["1", "2", "3"]),
    ("code=A^NQcode=B", ["1", "2"]),
])
def test_operators(text: str, expected: list[str]) -> None:
    assert matching(text) == expected


def test_invalid_clauses_are_dropped_and_reported() -> None:
    query = parse_query("bogus=1^name=Bolt^ORDERBYnope^ORDERBYDESCqty^sys_updated_on>javascript:gs.now()", COLUMNS)
    assert query.ignored == ["bogus=1", "sys_updated_on>javascript:gs.now()"]
    assert query.order == [("qty", True)]
    assert [row["sys_id"] for row in ROWS if query.matches(row)] == ["3"]


def test_date_generate_becomes_a_timestamp_and_pairs_join_every_branch() -> None:
    query = parse_query("sys_updated_on>=javascript:gs.dateGenerate('2025-02-01','10:00:00')^NQcode=B", COLUMNS,
                        [("name", "Bolt"), ("unknown", "1")])
    assert [[[(c.field, c.op, c.value) for c in group] for group in branch] for branch in query.branches] == [
        [[("sys_updated_on", ">=", "2025-02-01 10:00:00")], [("name", "=", "Bolt")]],
        [[("code", "=", "B")], [("name", "=", "Bolt")]],
    ]
    assert query.ignored == ["unknown"]
