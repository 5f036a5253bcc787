"""Two-way judgement (mlconnector.echoes): own writes, changes and conflicts, and the state
they are judged against."""

from __future__ import annotations

from mlconnector import echoes
from mlconnector.echoes import HOLD, TwoWayRule

A, B = "left", "right"
AGREED = {"name": "Acme", "phone": "555-0100", "email": "ap@acme.example"}


def judge(source: dict, target: dict | None, agreed: dict | None, rule: TwoWayRule | None = None) -> echoes.Verdict:
    return echoes.reconcile(source, target, agreed, rule or TwoWayRule(), source_system=A, target_system=B)


def test_our_own_write_read_back_is_not_sent_back() -> None:
    verdict = judge(dict(AGREED), dict(AGREED), AGREED)
    assert verdict.own_write and not verdict.changes and not verdict.conflicts
    # Blanks, padding and number spellings are one value on both sides.
    assert judge({**AGREED, "phone": "555-0100  "}, AGREED, {**AGREED, "phone": "555-0100"}).own_write


def test_a_change_on_one_side_is_written_to_the_other_and_becomes_the_base() -> None:
    verdict = judge({**AGREED, "phone": "555-0199"}, dict(AGREED), AGREED)
    assert verdict.changes == {"phone": "555-0199"} and verdict.agreed["phone"] == "555-0199"
    # A field the other side changed alone is left for the other direction to carry.
    verdict = judge({**AGREED, "phone": "555-0199"}, {**AGREED, "email": "new@acme.example"}, AGREED)
    assert verdict.changes == {"phone": "555-0199"} and verdict.agreed["email"] == AGREED["email"]


def test_both_sides_changed_one_field_the_rule_decides_and_says_so() -> None:
    source, target = {**AGREED, "phone": "555-0111"}, {**AGREED, "phone": "555-0222"}
    held = judge(source, target, AGREED)
    assert [c.field for c in held.held] == ["phone"] and not held.changes
    [decision] = held.decisions(A, B)
    assert "555-0111" in decision.value and "555-0222" in decision.value and "held" in decision.reason
    wins = judge(source, target, AGREED, TwoWayRule(default=HOLD, fields={"phone": A}))
    assert wins.changes == {"phone": "555-0111"} and not wins.held
    loses = judge(source, target, AGREED, TwoWayRule(default=B))
    assert not loses.changes and loses.agreed["phone"] == AGREED["phone"]  # the other direction carries B's value
    back = echoes.reconcile(target, source, loses.agreed, TwoWayRule(default=B), source_system=B, target_system=A)
    assert back.changes == {"phone": "555-0222"}  # ... and converges


def test_both_sides_made_the_same_change_nothing_is_written() -> None:
    verdict = judge({**AGREED, "phone": "555-0333"}, {**AGREED, "phone": "555-0333"}, AGREED)
    assert not verdict.changes and not verdict.conflicts and verdict.agreed["phone"] == "555-0333"


def test_never_paired_records_differing_fields_follow_the_rule() -> None:
    verdict = judge({"name": "Acme", "phone": "1"}, None, None)
    assert verdict.changes == {"name": "Acme", "phone": "1"}
    first = judge({"name": "Acme", "phone": "1"}, {"name": "Acme", "phone": "2"}, None, TwoWayRule(default=B))
    assert not first.changes and first.conflicts[0].winner == B
    back = echoes.reconcile({"name": "Acme", "phone": "2"}, {"name": "Acme", "phone": "1"}, first.agreed,
                            TwoWayRule(default=B), source_system=B, target_system=A)
    assert back.changes == {"phone": "2"}


def test_state_pairs_both_sides_and_knows_the_version_our_write_left(configure) -> None:
    from mlconnector.db import migrate
    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope

    configure()
    migrate.upgrade()
    with session_scope() as session:
        session.add(Integration(id="acme", pair="p", name="", config={}))
        session.flush()
        echoes.remember(session, "acme", "vendors", system=A, record_id="7", other_system=B, other_id="ST7",
                        agreed=AGREED, versions={B: "v2"})
    with session_scope() as session:
        here, there = echoes.find(session, "acme", "vendors", A, "7"), echoes.find(session, "acme", "vendors", B, "ST7")
        assert here is not None and there is not None
        assert (here.other_id, there.other_id, here.agreed) == ("ST7", "7", AGREED)
        assert there.is_own_write("v2") and not there.is_own_write("v3") and not here.is_own_write(None)
        assert here.other_own_version == "v2"
        echoes.remember(session, "acme", "vendors", system=B, record_id="ST7", other_system=A, other_id="7",
                        agreed={**AGREED, "phone": "9"}, versions={A: "a5"})
    with session_scope() as session:
        assert echoes.find(session, "acme", "vendors", A, "7").own_version == "a5"
        assert echoes.find(session, "acme", "vendors", B, "ST7").own_version == "v2"
        assert echoes.find(session, "acme", "vendors", B, "ST7").agreed["phone"] == "9"
