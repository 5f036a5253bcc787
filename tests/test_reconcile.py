"""The reconciliation's platform part, without vendors: periods, matching and classification,
totals, and the CSV the accountant's workbook reads."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from mlconnector.flows import ReconDocument
from mlconnector.reconcile import (LedgerEntry, PeriodError, ReconciliationReport, classify, parse_period, to_csv,
                                   to_json)


def doc(key: str, amount: str, day: int = 10, **extra: str) -> ReconDocument:
    return ReconDocument(key, extra.pop("number", key), Decimal(amount), date(2026, 11, day), **extra)


def test_a_month_and_a_range() -> None:
    november = parse_period("2026-11")
    assert (november.start, november.end, november.last) == (date(2026, 11, 1), date(2026, 12, 1), date(2026, 11, 30))
    february = parse_period("2028-02")
    assert february.last == date(2028, 2, 29)
    span = parse_period("2026-11-03..2026-11-03")
    assert (span.start, span.end) == (date(2026, 11, 3), date(2026, 11, 4))
    for bad, words in (("2026-13", "month 13"), ("2026-1", "is not YYYY-MM"), ("", "is not YYYY-MM"),
                       ("2026-11-09..2026-11-01", "ends before it starts"), ("2026-02-30..2026-03-01", "day is out of range")):
        with pytest.raises(PeriodError, match=words):
            parse_period(bad)


def test_each_difference_is_classified_once_and_the_totals_add_up() -> None:
    sources = [doc("1", "100.00", counterpart_id="v1"), doc("2", "200.00", counterpart_id="v1"),
               doc("3", "300.00"), doc("4", "400.00"), doc("5", "500.00"), doc("6", "600.00", match_key="INV-6"),
               doc("7", "700.00", counterpart_id="v2"), doc("8", "80.00"), doc("9", "90.00")]
    targets = [doc("T1", "100.00", counterpart_id="E1"), doc("T2", "200.004", counterpart_id="E1"),
               doc("T5", "499.99"), doc("T6", "600.00", match_key="INV-6"), doc("T7", "700.00", counterpart_id="E9"),
               doc("HAND", "55.00"), doc("OLD", "12.00"), doc("T9", "90.00", source_id="9")]
    ledger = [LedgerEntry(11, "1", "written", "T1", written_amount=Decimal("100.00")),
              LedgerEntry(12, "2", "skipped", "T2"),
              LedgerEntry(13, "3", "held", None, "vendor 'Acme' looks like 'ACME'"),
              LedgerEntry(14, "4", "failed", None, "400: bad GL"),
              LedgerEntry(15, "5", "written", "T5"),
              LedgerEntry(17, "7", "written", "T7"),
              LedgerEntry(18, "8", "skipped", None),
              LedgerEntry(20, "0", "written", "OLD")]  # a source document dated in another period
    totals = classify("bills", "bills -> invoices", sources, targets, ledger, {"v1": "E1", "v2": "E2"})
    found = [(d.kind, d.source_ref, d.target_ref, d.record_id) for d in totals.differences]
    assert found == [("not_from_us", None, "HAND", None),
                     ("amount_differs", "5", "T5", 15),
                     ("vendor_differs", "7", "T7", 17),
                     ("held", "3", None, 13),
                     ("failed", "4", None, 14)]
    assert "looks like" in totals.differences[3].detail and "400: bad GL" in totals.differences[4].detail
    # 1 and 2 agree to the cent; 6 matched by its documented key, 9 by the origin id it carries; 8 had nothing to move.
    assert (totals.matched_count, totals.not_moved_count, totals.target_outside_period_count) == (6, 1, 1)
    assert (totals.source_count, totals.source_total) == (9, Decimal("2970.00"))
    assert (totals.target_count, totals.target_total) == (8, Decimal("2256.99"))
    assert (totals.ledger_count, totals.ledger_total) == (4, Decimal("1500.00"))


def test_missing_says_why() -> None:
    sources = [doc("1", "1.00"), doc("2", "2.00"), doc("3", "3.00")]
    ledger = [LedgerEntry(2, "2", "pending", None), LedgerEntry(3, "3", "written", "GONE")]
    totals = classify("f", "e", sources, [], ledger, {})
    assert [(d.kind, d.record_id) for d in totals.differences] == [("missing_in_target", None), ("missing_in_target", 2),
                                                                   ("missing_in_target", 3)]
    assert "not synced yet" in totals.differences[0].detail and "queued" in totals.differences[1].detail
    assert "GONE" in totals.differences[2].detail and totals.differences[2].target_ref == "GONE"


def test_csv_parses_into_the_reports_rows() -> None:
    totals = classify("bills", "bills, \"quoted\"", [doc("1", "10.10", counterpart="Smith, Jones & Co")],
                      [doc("X", "1.00")], [LedgerEntry(7, "1", "held", None, "line one\nline two")], {})
    report = ReconciliationReport(integration="acme", pair="p", period="2026-11",
                                  generated_at=datetime(2026, 12, 1, tzinfo=timezone.utc), entities=[totals])
    parsed = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [r["row"] for r in parsed] == ["totals", "difference", "difference"]
    assert parsed[0]["entity"] == 'bills, "quoted"' and parsed[0]["source_total"] == "10.10"
    held = next(r for r in parsed if r["kind"] == "held")
    assert (held["counterpart"], held["detail"], held["trail"]) == ("Smith, Jones & Co", "held: line one\nline two",
                                                                    "mlconnector records show 7")
    assert to_json(report) == to_json(ReconciliationReport.model_validate_json(to_json(report)))
