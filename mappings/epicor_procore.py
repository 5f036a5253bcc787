"""Epicor Kinetic -> Procore: pure mapping functions.

Inputs are Epicor rows in the vendor's own JSON shape (vendors, PO headers with their
PODetails and, where Epicor gives them, PORels; AP invoice headers with their APInvDtls),
the integration config and the lookups the task gathered from Procore (the vendor's Procore
id, the company's projects, the project's cost codes, the company's line item types). The
outputs are Procore documents: header fields, flat line items each keyed by its own
origin id, and the origin id (the Epicor source id) that finds the record again. Every
choice is returned as a decision for the audit trail; a gap a person must close (an unknown
project, a GL account without a cost code) is a hold naming it. No I/O happens here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, Field

from mappings import epicor_values as ev
from mlconnector.config import IntegrationConfig, StrictModel, WritePolicy
from mlconnector.decisions import Decision
from mlconnector.flows import MappedRecord
from mlconnector.holds import ConfigNeeded, Hold

# (Round 2) the base types Procore's line item types are built on; the codes are company data.
BASE_TYPES = ("equipment", "materials", "commitment", "owner_cost", "professional_services", "other")


# ---- config ------------------------------------------------------------------------------------


class ProjectRule(StrictModel):
    """Which Procore project an Epicor PO or AP invoice belongs to: Epicor has no Procore
    project, only a job/project reference on its releases and lines, so the rule is declared."""

    fields: list[str] = Field(
        default_factory=lambda: ["JobNum"],
        description="Epicor fields holding the project/job reference, read on the header, then on its releases "
                    "(PORels) and lines (PODetails, APInvDtls).")
    by_reference: dict[str, int] = Field(
        default_factory=dict, description="Epicor project/job reference -> Procore project id.")
    match_procore: bool = Field(
        True, description="A reference equal to a Procore project's origin_id or project number is that project.")
    default: int | None = Field(
        None, description="Procore project id of documents that carry no reference (unset: such a document is held).")


class CostCodeMap(StrictModel):
    """Epicor GL accounts -> Procore cost codes (by full code, e.g. 03-300), per the customer's chart."""

    by_account: dict[str, str] = Field(
        default_factory=dict,
        description="Epicor GL account (segments joined by '-', e.g. 5100-300) -> Procore cost code full code "
                    "(e.g. 03-300).")
    default: str | None = Field(None, description="Cost code for accounts not listed (unset: such a line is held).")
    po_lines: str | None = Field(
        None, description="Cost code of PO lines that carry no GL account of their own (unset: the default; "
                          "neither: held).")


class LineItemTypeRule(StrictModel):
    """Which of the company's line item types (cost types) the lines carry."""

    code: str | None = Field(None, description="The type's code in the company's list (it must exist there).")
    base_type: Literal["equipment", "materials", "commitment", "owner_cost", "professional_services", "other"] = Field(
        "materials", description="Without a code: the company's first type of this base type.")


class PoStatuses(StrictModel):
    open: str = Field("Approved", description="Procore status of an open Epicor PO.")
    closed: str = Field("Closed", description="Procore status of a PO closed in Epicor (OpenOrder false).")
    void: str = Field("Closed", description="Procore status of a PO voided in Epicor (VoidOrder true).")


class DirectCostStatuses(StrictModel):
    open: str = Field("pending", description="Procore status of an Epicor invoice not posted yet.")
    posted: str = Field("approved", description="Procore status of an invoice posted in Epicor.")


class EpicorProcoreConfig(IntegrationConfig):
    origin_prefix: str = Field("epicor", description="Prefix of every origin_id written (origin ids are unique per "
                                                     "company at Procore, so each Epicor company needs its own).")
    vendor_write_policy: WritePolicy = Field(
        "create_only", description="Changes to an existing Procore vendor: create_only (never), fill_blanks (empty "
                                   "fields only) or overwrite (the address changes only under overwrite).")
    projects: ProjectRule = Field(default_factory=ProjectRule, description="Epicor document -> Procore project.")
    cost_codes: CostCodeMap = Field(default_factory=CostCodeMap, description="Epicor GL account -> Procore cost code.")
    line_item_type: LineItemTypeRule = Field(default_factory=LineItemTypeRule,
                                             description="Line item type of commitment and direct cost lines.")
    po_statuses: PoStatuses = Field(default_factory=PoStatuses, description="Procore PO status per Epicor PO state.")
    direct_cost_statuses: DirectCostStatuses = Field(default_factory=DirectCostStatuses,
                                                     description="Procore direct cost status per Epicor invoice state.")


# ---- documents ---------------------------------------------------------------------------------


class ProcoreDocument(BaseModel):
    """What Procore should hold: header fields and flat line items, each line with its own
    origin_id, so a re-sent document updates its lines instead of adding more."""

    kind: Literal["vendor", "commitment", "direct_cost"]
    label: str
    origin_id: str
    project_id: int | None = None
    header: dict[str, Any]
    lines: list[dict[str, Any]] = Field(default_factory=list)


@dataclass(frozen=True)
class ProjectRef:
    id: int
    name: str = ""
    origin_id: str | None = None
    project_number: str | None = None


@dataclass(frozen=True)
class LineItemTypeRef:
    id: int
    code: str | None
    base_type: str | None


def origin(config: EpicorProcoreConfig, kind: str, key: str) -> str:
    """The Procore origin_id of an Epicor record: the Epicor source id, prefixed per company."""
    return f"{config.origin_prefix}:{kind}:{key}"


def origin_data(**fields: Any) -> str:
    """Procore's origin_data is a string blob: the Epicor keys, as JSON."""
    return json.dumps({k: v for k, v in fields.items() if v not in (None, "")}, sort_keys=True, default=str)


# ---- vendors -----------------------------------------------------------------------------------


def map_vendor(vendor: Mapping[str, Any], config: EpicorProcoreConfig) -> MappedRecord:
    """An Epicor vendor as a Procore company directory vendor, keyed by its VendorNum."""
    name = str(vendor.get("Name") or vendor.get("VendorID") or "").strip()
    street = ", ".join(str(vendor.get(f) or "").strip() for f in ("Address1", "Address2", "Address3") if vendor.get(f))
    header = {
        "name": name, "abbreviated_name": str(vendor.get("VendorID") or "")[:10] or None,
        "address": street or None, "city": vendor.get("City") or None, "state_code": vendor.get("State") or None,
        "zip": vendor.get("ZIP") or None, "country_code": _country(vendor.get("Country")),
        "business_phone": vendor.get("PhoneNum") or None, "fax_number": vendor.get("FaxNum") or None,
        "email_address": vendor.get("EMailAddress") or None, "is_active": not vendor.get("Inactive"),
        "origin_code": str(vendor.get("VendorID") or "") or None,
        "origin_data": origin_data(VendorNum=vendor.get("VendorNum"), VendorID=vendor.get("VendorID"),
                                   SysRowID=vendor.get("SysRowID")),
    }
    document = ProcoreDocument(kind="vendor", label=f"vendor {vendor.get('VendorID')} '{name}'",
                               origin_id=origin(config, "vendor", str(vendor.get("VendorNum"))), header=header)
    return MappedRecord(document, external_key={"VendorNum": vendor.get("VendorNum")},
                        decisions=[Decision("vendor", name, f"Epicor vendor {vendor.get('VendorID')} "
                                                            f"({vendor.get('VendorNum')}); active: {header['is_active']}")])


def _country(value: Any) -> str | None:
    """Procore takes ISO-3166 alpha-2; Epicor's Country is free text ('USA')."""
    text = str(value or "").strip().upper()
    return {"USA": "US", "UNITED STATES": "US", "US": "US", "CANADA": "CA", "CA": "CA", "MEXICO": "MX"}.get(
        text, text if len(text) == 2 else None)


# ---- projects ----------------------------------------------------------------------------------


def project_references(document: Mapping[str, Any], config: EpicorProcoreConfig,
                       children: Sequence[str] = ("PORels", "PODetails", "APInvDtls")) -> list[str]:
    """The distinct project/job references a document carries, header first, in order."""
    found: list[str] = []
    rows = [document] + [row for nav in children for row in ev.children(document, nav)]
    for row in rows:
        for name in config.projects.fields:
            value = str(row.get(name) or "").strip()
            if value and value not in found:
                found.append(value)
    return found


def resolve_project(label: str, references: list[str], config: EpicorProcoreConfig,
                    projects: Sequence[ProjectRef]) -> tuple[ProjectRef, Decision] | Hold:
    """The Procore project of a document, by the declared rule; a hold naming what is unknown."""
    by_id = {p.id: p for p in projects}
    if len(references) > 1:
        return Hold(reason=f"{label} names several projects ({', '.join(references)}); Procore takes one project per "
                           f"document: split it in Epicor, or map the references to one project "
                           f"(projects.by_reference)",
                    releases=tuple(ConfigNeeded(f"projects.by_reference.{r}") for r in references))
    if not references:
        if config.projects.default is not None and config.projects.default in by_id:
            return by_id[config.projects.default], Decision("project", by_id[config.projects.default].name,
                                                            "no project reference; projects.default")
        missing = "" if config.projects.default is None else f" (projects.default {config.projects.default} is not a " \
                                                              f"project this integration can see in Procore)"
        return Hold(reason=f"{label} carries no project reference ({', '.join(config.projects.fields)}) and no "
                           f"default project is set{missing}; set projects.default (mlconnector set-config)",
                    releases=(ConfigNeeded("projects.default"),))
    reference = references[0]
    mapped = config.projects.by_reference.get(reference)
    if mapped is not None:
        if mapped in by_id:
            return by_id[mapped], Decision("project", by_id[mapped].name, f"reference {reference}: projects.by_reference")
        return Hold(reason=f"{label}: project reference {reference} maps to Procore project {mapped}, which this "
                           f"integration cannot see in Procore; correct projects.by_reference.{reference}",
                    releases=(ConfigNeeded(f"projects.by_reference.{reference}"),))
    if config.projects.match_procore:
        for project in projects:
            if reference in (project.origin_id, project.project_number):
                how = "origin_id" if reference == project.origin_id else "project number"
                return project, Decision("project", project.name, f"reference {reference}: the Procore project's {how}")
    return Hold(reason=f"{label}: unknown project '{reference}': no Procore project has it as origin_id or project "
                       f"number and projects.by_reference does not map it; map it with "
                       f"projects.by_reference.{reference} (mlconnector set-config)",
                releases=(ConfigNeeded(f"projects.by_reference.{reference}"),),
                decisions=[Decision("project", reference, "unknown")])


# ---- cost codes and line item types ------------------------------------------------------------


def cost_code_for(account: str, config: EpicorProcoreConfig) -> str | None:
    """The configured Procore cost code (full code) of an Epicor GL account (None: not mapped)."""
    return config.cost_codes.by_account.get(ev.gl_account(account)) or config.cost_codes.default


def line_item_type(config: EpicorProcoreConfig, types: Sequence[LineItemTypeRef]) -> tuple[LineItemTypeRef, Decision] | Hold:
    """The company's line item type the lines carry, validated against the company's own list."""
    rule = config.line_item_type
    if rule.code:
        for kind in types:
            if kind.code == rule.code:
                return kind, Decision("line item type", rule.code, "line_item_type.code")
        listed = ", ".join(sorted(k.code for k in types if k.code)) or "none"
        return Hold(reason=f"line item type code {rule.code} is not in the Procore company's list ({listed}); "
                           f"correct line_item_type.code", releases=(ConfigNeeded("line_item_type.code"),))
    for kind in types:
        if kind.base_type == rule.base_type:
            return kind, Decision("line item type", kind.code or str(kind.id), f"the company's first {rule.base_type} type")
    return Hold(reason=f"the Procore company has no line item type of base type {rule.base_type}; set "
                       f"line_item_type.code or line_item_type.base_type",
                releases=(ConfigNeeded("line_item_type.code"), ConfigNeeded("line_item_type.base_type")))


def cost_code_hold(label: str, unmapped: list[str], absent: Mapping[str, str], project: ProjectRef | None) -> Hold:
    """A hold naming every GL account without a usable cost code (not mapped, or mapped to a
    code the project does not have); a config change of that account's key releases it."""
    parts = []
    if unmapped:
        parts.append(f"GL account(s) {', '.join(unmapped)} could not be mapped to a Procore cost code; map each with "
                     f"cost_codes.by_account.<account> (mlconnector set-config) and the record follows")
    if absent:
        named = ", ".join(f"{code} (for GL account {account})" for account, code in absent.items())
        where = f"Procore project '{project.name}' ({project.id})" if project else "the Procore project"
        parts.append(f"cost code(s) {named} are not in {where}; add them there or change cost_codes.by_account")
    releases = tuple(ConfigNeeded(f"cost_codes.by_account.{a}") for a in [*unmapped, *absent]) + \
        (ConfigNeeded("cost_codes.default"),)
    return Hold(reason=f"{label}: " + "; ".join(parts), releases=releases,
                decisions=[Decision("cost code", a, "no mapping") for a in unmapped])


def _codes_for(accounts: Sequence[str], config: EpicorProcoreConfig, codes: Mapping[str, int],
               label: str, project: ProjectRef, fallback: str | None = None) -> dict[str, tuple[str, int]] | Hold:
    """GL account -> (full code, Procore id) for every account, or the hold naming the gaps.
    The empty account '' stands for lines with no GL account of their own (`fallback`)."""
    unmapped: list[str] = []
    absent: dict[str, str] = {}
    found: dict[str, tuple[str, int]] = {}
    for account in dict.fromkeys(accounts):
        code = (fallback or config.cost_codes.default) if account == "" else cost_code_for(account, config)
        if code is None:
            unmapped.append(account or "(none on the line)")
        elif code not in codes:
            absent[account or "(none on the line)"] = code
        else:
            found[account] = (code, codes[code])
    if unmapped or absent:
        return cost_code_hold(label, unmapped, absent, project)
    return found


# ---- purchase orders ---------------------------------------------------------------------------


def po_status(po: Mapping[str, Any], config: EpicorProcoreConfig) -> str:
    if po.get("VoidOrder"):
        return config.po_statuses.void
    return config.po_statuses.open if po.get("OpenOrder", True) else config.po_statuses.closed


def flat_po_lines(po: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Epicor's PO hierarchy (line -> releases / delivery schedule) as flat rows: one per
    release where a line has releases, else one per line. Each row keeps its line's price and
    the GL account the release (or else the line) is assigned to."""
    releases: dict[int, list[dict[str, Any]]] = {}
    for release in ev.children(po, "PORels"):
        releases.setdefault(int(release.get("POLine") or 0), []).append(release)
    rows: list[dict[str, Any]] = []
    for line in sorted(ev.children(po, "PODetails"), key=lambda l: int(l.get("POLine") or 0)):
        if line.get("VoidLine"):
            continue
        number = int(line.get("POLine") or 0)
        unit = ev.amount(line, "UnitCost")
        own = sorted(releases.get(number, []), key=lambda r: int(r.get("PORelNum") or 0))
        if not own:
            rows.append({"key": f"{number}", "line": line, "release": None, "quantity": ev.decimal(line.get("OrderQty")),
                         "unit_cost": unit, "amount": ev.money(ev.amount(line, "ExtCost")),
                         "account": ev.gl_account(line.get("GLAccount"))})
            continue
        for release in own:
            quantity = ev.decimal(release.get("RelQty") or release.get("XRelQty"))
            rows.append({"key": f"{number}.{release.get('PORelNum')}", "line": line, "release": release,
                         "quantity": quantity, "unit_cost": unit, "amount": ev.money(quantity * unit),
                         "account": ev.gl_account(release.get("GLAccount") or line.get("GLAccount"))})
    return rows


def map_commitment(po: Mapping[str, Any], config: EpicorProcoreConfig, vendor_id: int, project: ProjectRef,
                   codes: Mapping[str, int], kind: LineItemTypeRef) -> MappedRecord | Hold:
    """An Epicor PO (POHeader, PODetails, PORels) as a Procore purchase order contract on its
    project, with flat line items, each on a cost code and the company's line item type."""
    number = str(po["PONum"])
    label = f"PO {number}"
    key = origin(config, "po", number)
    rows = flat_po_lines(po)
    resolved = _codes_for([r["account"] for r in rows], config, codes, label, project, config.cost_codes.po_lines)
    if isinstance(resolved, Hold):
        return resolved
    status = po_status(po, config)
    header = {
        "number": number, "title": f"Epicor PO {number}", "vendor_id": vendor_id, "status": status,
        "description": str(po.get("CommentText") or "") or None, "payment_terms": str(po.get("TermsCode") or "") or None,
        "ship_via": str(po.get("ShipViaCode") or "") or None, "contract_date": ev.day(po.get("OrderDate")) or None,
        "delivery_date": ev.day(po.get("PromiseDate") or po.get("DueDate")) or None, "accounting_method": "unit",
        "origin_code": number,
        "origin_data": origin_data(PONum=po.get("PONum"), VendorNum=po.get("VendorNum"), SysRowID=po.get("SysRowID")),
    }
    decisions = [Decision("status", status, _po_state_words(po)), Decision("vendor", str(vendor_id), "the vendors flow's write")]
    lines = []
    for row in rows:
        code, code_id = resolved[row["account"]]
        line, release = row["line"], row["release"]
        description = str(line.get("LineDesc") or line.get("PartNum") or f"line {line.get('POLine')}")
        if release is not None:
            due = ev.day(release.get("DueDate") or line.get("DueDate"))
            description += f" (release {release.get('PORelNum')}" + (f", due {due})" if due else ")")
        lines.append({
            "origin_id": f"{key}:{row['key']}", "description": description, "quantity": ev.number_text(row["quantity"]),
            "unit_cost": ev.number_text(row["unit_cost"]), "amount": str(row["amount"]),
            "uom": str(line.get("PUM") or line.get("IUM") or "") or None, "cost_code_id": code_id,
            "line_item_type_id": kind.id,
        })
        decisions.append(Decision(f"line {row['key']} cost code", code,
                                  f"GL account {row['account']}" if row["account"] else "cost_codes.po_lines (no GL account)"))
    document = ProcoreDocument(kind="commitment", label=label, origin_id=key, project_id=project.id, header=header,
                               lines=lines)
    return MappedRecord(document, external_key={"PONum": po["PONum"], "vendor_id": vendor_id, "number": number},
                        decisions=decisions)


def _po_state_words(po: Mapping[str, Any]) -> str:
    if po.get("VoidOrder"):
        return "voided in Epicor"
    return "open in Epicor" if po.get("OpenOrder", True) else "closed in Epicor"


# ---- AP invoices -------------------------------------------------------------------------------


def invoice_accounts(invoice: Mapping[str, Any]) -> list[str]:
    """The distinct GL accounts of an invoice's lines, as people write them."""
    return list(dict.fromkeys(ev.gl_account(l.get("GLAccount")) for l in ev.children(invoice, "APInvDtls")))


def unmapped_accounts(invoice: Mapping[str, Any], config: EpicorProcoreConfig) -> list[str]:
    """The invoice's GL accounts the map gives no cost code: validated before anything is read
    from or written to Procore."""
    return [a for a in invoice_accounts(invoice) if cost_code_for(a, config) is None]


def invoice_label(invoice: Mapping[str, Any]) -> str:
    return f"AP invoice {invoice.get('InvoiceNum')} of vendor {invoice.get('VendorNumVendorID') or invoice.get('VendorNum')}"


def map_direct_cost(invoice: Mapping[str, Any], config: EpicorProcoreConfig, vendor_id: int, project: ProjectRef,
                    codes: Mapping[str, int], kind: LineItemTypeRef) -> MappedRecord | Hold:
    """An Epicor AP invoice (APInvHed + APInvDtls) as a Procore invoice direct cost on its
    project, every line on the cost code its GL account maps to (else a hold naming it)."""
    number = str(invoice["InvoiceNum"])
    label = invoice_label(invoice)
    key = origin(config, "apinvoice", f"{invoice.get('VendorNum')}/{number}")
    lines_in = sorted(ev.children(invoice, "APInvDtls"), key=lambda l: int(l.get("InvoiceLine") or 0))
    resolved = _codes_for([ev.gl_account(l.get("GLAccount")) for l in lines_in], config, codes, label, project)
    if isinstance(resolved, Hold):
        return resolved
    posted = bool(invoice.get("Posted"))
    status = config.direct_cost_statuses.posted if posted else config.direct_cost_statuses.open
    header = {
        "direct_cost_type": "invoice", "invoice_number": number, "vendor_id": vendor_id, "status": status,
        "direct_cost_date": ev.day(invoice.get("InvoiceDate")) or None,
        "received_date": ev.day(invoice.get("ApplyDate") or invoice.get("InvoiceDate")) or None,
        "terms": str(invoice.get("TermsCode") or "") or None,
        "description": str(invoice.get("Description") or "") or None,
        "origin_data": origin_data(VendorNum=invoice.get("VendorNum"), InvoiceNum=number, REFPONum=invoice.get("REFPONum"),
                                   SysRowID=invoice.get("SysRowID")),
    }
    decisions = [Decision("status", status, "posted in Epicor" if posted else "not posted in Epicor")]
    lines = []
    for line in lines_in:
        account = ev.gl_account(line.get("GLAccount"))
        code, code_id = resolved[account]
        lines.append({
            "origin_id": f"{key}:{line.get('InvoiceLine')}",
            "description": str(line.get("Description") or line.get("PartNum") or f"line {line.get('InvoiceLine')}"),
            "quantity": ev.number_text(line.get("VendorQty") or 1), "unit_cost": ev.number_text(ev.amount(line, "UnitCost")),
            "amount": str(ev.money(ev.amount(line, "ExtCost"))), "uom": str(line.get("PUM") or "") or None,
            "cost_code_id": code_id, "line_item_type_id": kind.id,
        })
        decisions.append(Decision(f"line {line.get('InvoiceLine')} cost code", code, f"GL account {account}"))
    document = ProcoreDocument(kind="direct_cost", label=label, origin_id=key, project_id=project.id, header=header,
                               lines=lines)
    return MappedRecord(document, external_key={"VendorNum": invoice.get("VendorNum"), "InvoiceNum": number,
                                                "vendor_id": vendor_id}, decisions=decisions)


# ---- comparing with Procore --------------------------------------------------------------------


def differences(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields whose Procore value differs from the wanted one (money compared as numbers,
    references by id); a field Procore's answer does not carry is not compared."""
    out: dict[str, tuple[Any, Any]] = {}
    for name, value in wanted.items():
        present, have = _current(current, name)
        if present and not _same(have, value):
            out[name] = (have, value)
    return out


def _current(row: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    if name in row:
        return True, row[name]
    nested = {"vendor_id": "vendor", "cost_code_id": "cost_code", "line_item_type_id": "line_item_type"}.get(name)
    if nested and nested in row:
        ref = row[nested]
        return True, ref.get("id") if isinstance(ref, Mapping) else ref
    return False, None


def _same(have: Any, want: Any) -> bool:
    if have in (None, "") and want in (None, ""):
        return True
    if isinstance(want, str) and isinstance(have, (str, int, float, Decimal)):
        try:
            return Decimal(str(have)) == Decimal(want)
        except Exception:
            return str(have) == want
    return have == want


def line_differences(current: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]) -> dict[str, tuple[Any, Any]]:
    """Per line (by origin_id): missing lines and changed fields."""
    by_origin = {str(l.get("origin_id")): l for l in current if l.get("origin_id")}
    out: dict[str, tuple[Any, Any]] = {}
    for line in wanted:
        have = by_origin.get(str(line["origin_id"]))
        tag = str(line["origin_id"]).rsplit(":", 1)[-1]
        if have is None:
            out[f"line {tag}"] = (None, "missing in Procore")
            continue
        for name, change in differences(have, {k: v for k, v in line.items() if k != "origin_id"}).items():
            out[f"line {tag} {name}"] = change
    return out
