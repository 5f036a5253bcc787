"""Epicor -> Procore mapping: pure functions, no I/O."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from mappings import epicor_procore as m
from mlconnector.flows import MappedRecord
from mlconnector.holds import ConfigNeeded, Hold

PROJECTS = [m.ProjectRef(11, "Harbor Wing 1", "JOB-1000", "24-100"), m.ProjectRef(12, "Harbor Wing 2", "JOB-1001", "24-101")]
CODES = {"05-500": 501, "01-100": 101, "03-300": 303}
MATERIALS = m.LineItemTypeRef(77, "M", "materials")


def config(**extra: Any) -> m.EpicorProcoreConfig:
    base = {"systems": {}, "projects": {"default": 11},
            "cost_codes": {"by_account": {"5100-300": "05-500", "6400-100": "01-100"}, "po_lines": "03-300"}}
    return m.EpicorProcoreConfig.model_validate({**base, **extra})


def po(**extra: Any) -> dict[str, Any]:
    return {"PONum": 1042, "VendorNum": 7, "OpenOrder": True, "OrderDate": "2026-11-02T00:00:00", "TermsCode": "N30",
            "PODetails": [{"POLine": 1, "LineDesc": "Rebar", "OrderQty": 10, "UnitCost": 2.5, "ExtCost": 25.0, "PUM": "EA"},
                          {"POLine": 2, "LineDesc": "Forms", "OrderQty": 4, "UnitCost": 100, "ExtCost": 400.0,
                           "GLAccount": "6400|100"}], **extra}


def test_po_releases_and_line_gl_assignments_become_flat_line_items_with_cost_codes() -> None:
    source = po(PORels=[{"POLine": 1, "PORelNum": 1, "RelQty": 6, "DueDate": "2026-11-10", "GLAccount": "5100|300"},
                        {"POLine": 1, "PORelNum": 2, "RelQty": 4, "DueDate": "2026-11-20"}])
    mapped = m.map_commitment(source, config(), 8801, PROJECTS[0], CODES, MATERIALS)
    assert isinstance(mapped, MappedRecord)
    document: m.ProcoreDocument = mapped.document  # type: ignore[assignment]
    lines = {line["origin_id"]: line for line in document.lines}
    assert list(lines) == ["epicor:po:1042:1.1", "epicor:po:1042:1.2", "epicor:po:1042:2"]
    assert lines["epicor:po:1042:1.1"]["cost_code_id"] == 501  # the release's own GL account
    assert lines["epicor:po:1042:1.2"]["cost_code_id"] == 303  # no GL account: cost_codes.po_lines
    assert lines["epicor:po:1042:2"]["cost_code_id"] == 101  # the line's GL account
    assert (lines["epicor:po:1042:1.1"]["quantity"], lines["epicor:po:1042:1.1"]["amount"]) == ("6", "15.00")
    assert "release 2, due 2026-11-20" in lines["epicor:po:1042:1.2"]["description"]
    assert sum(Decimal(l["amount"]) for l in document.lines) == Decimal("425.00")
    assert {l["line_item_type_id"] for l in document.lines} == {77}
    assert document.header["vendor_id"] == 8801 and document.header["number"] == "1042"
    assert document.project_id == 11 and document.origin_id == "epicor:po:1042"


def test_an_unmapped_invoice_gl_account_is_a_hold_naming_it_released_by_its_config_key() -> None:
    invoice = {"VendorNum": 7, "VendorNumVendorID": "ACME0007", "InvoiceNum": "INV-9",
               "APInvDtls": [{"InvoiceLine": 1, "ExtCost": 10, "GLAccount": "7000|300"},
                             {"InvoiceLine": 2, "ExtCost": 5, "GLAccount": "5100|300"}]}
    assert m.unmapped_accounts(invoice, config()) == ["7000-300"]
    held = m.map_direct_cost(invoice, config(), 8801, PROJECTS[0], CODES, MATERIALS)
    assert isinstance(held, Hold)
    assert "GL account(s) 7000-300 could not be mapped to a Procore cost code" in held.reason
    assert ConfigNeeded("cost_codes.by_account.7000-300") in held.releases
    fixed = config(cost_codes={"by_account": {"7000-300": "01-100", "5100-300": "05-500"}})
    mapped = m.map_direct_cost(invoice, fixed, 8801, PROJECTS[0], CODES, MATERIALS)
    assert isinstance(mapped, MappedRecord)
    assert [l["cost_code_id"] for l in mapped.document.lines] == [101, 501]  # type: ignore[attr-defined]


def test_a_mapped_cost_code_the_project_lacks_is_a_hold_naming_code_and_project() -> None:
    invoice = {"VendorNum": 7, "InvoiceNum": "INV-9", "APInvDtls": [{"InvoiceLine": 1, "ExtCost": 10, "GLAccount": "5100|300"}]}
    held = m.map_direct_cost(invoice, config(), 8801, PROJECTS[1], {"01-100": 1}, MATERIALS)
    assert isinstance(held, Hold) and "05-500 (for GL account 5100-300) are not in Procore project 'Harbor Wing 2'" in held.reason


def test_the_project_follows_the_declared_rule_and_an_unknown_one_is_a_hold_naming_it() -> None:
    cfg = config(projects={"by_reference": {"J-7": 12}, "default": 11})
    found = m.resolve_project("PO 1", m.project_references({"APInvDtls": [{"JobNum": "J-7"}]}, cfg), cfg, PROJECTS)
    assert not isinstance(found, Hold) and found[0].id == 12
    by_origin = m.resolve_project("PO 1", ["JOB-1001"], cfg, PROJECTS)
    assert not isinstance(by_origin, Hold) and by_origin[0].id == 12 and "origin_id" in by_origin[1].reason
    default = m.resolve_project("PO 1", m.project_references({"PODetails": [{}]}, cfg), cfg, PROJECTS)
    assert not isinstance(default, Hold) and default[0].id == 11
    unknown = m.resolve_project("PO 1", ["JOB-4242"], cfg, PROJECTS)
    assert isinstance(unknown, Hold) and "unknown project 'JOB-4242'" in unknown.reason
    assert unknown.releases == (ConfigNeeded("projects.by_reference.JOB-4242"),)
    split = m.resolve_project("PO 1", ["JOB-1000", "JOB-1001"], cfg, PROJECTS)
    assert isinstance(split, Hold) and "several projects" in split.reason
    nothing = m.resolve_project("PO 1", [], config(projects={}), PROJECTS)
    assert isinstance(nothing, Hold) and nothing.releases == (ConfigNeeded("projects.default"),)


def test_line_item_types_are_read_from_the_company_never_assumed() -> None:
    types = [m.LineItemTypeRef(1, "LAB", "professional_services"), m.LineItemTypeRef(2, "MAT", "materials")]
    chosen = m.line_item_type(config(), types)
    assert not isinstance(chosen, Hold) and chosen[0].id == 2
    missing = m.line_item_type(config(line_item_type={"code": "M"}), types)
    assert isinstance(missing, Hold) and "code M is not in the Procore company's list (LAB, MAT)" in missing.reason


def test_differences_compare_money_as_numbers_and_references_by_id() -> None:
    current = {"amount": "25.0", "vendor": {"id": 8801}, "cost_code": {"id": 501}, "status": "Approved"}
    assert m.differences(current, {"amount": "25.00", "vendor_id": 8801, "cost_code_id": 501, "status": "Approved"}) == {}
    assert m.differences(current, {"status": "Closed"}) == {"status": ("Approved", "Closed")}
    assert m.line_differences([{"origin_id": "x:1", "amount": "1.0"}], [{"origin_id": "x:1", "amount": "1"},
                                                                         {"origin_id": "x:2", "amount": "2"}]) == \
        {"line 2": (None, "missing in Procore")}
