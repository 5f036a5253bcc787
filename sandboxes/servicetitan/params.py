"""Reading ServiceTitan requests: JSON bodies and their field checks with the vendor's
validation messages, query parameters, continuation tokens, and the PATCH field maps."""

from __future__ import annotations

import base64
import uuid
from typing import Any, Callable

from flask import request

from sandboxes.servicetitan.store import Row
from sandboxes.servicetitan.vendor import VALIDATION_TITLE, ApiError, _address, invalid, iso, num, parse_when

Errors = dict[str, list[str]]

NUMBER = (int, float)
ADDRESS_FIELDS = ("street", "unit", "city", "state", "zip", "country")
_TOKEN_PREFIX = "c1"

# ---- reading requests ------------------------------------------------------------------------


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("$", "A JSON object is required.")
    return body


def _pascal(name: str) -> str:
    return name[0].upper() + name[1:]


def _type_ok(value: Any, expected: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and expected is not bool and (not isinstance(expected, tuple) or bool not in expected):
        return False
    return isinstance(value, expected)


def _fields(body: dict[str, Any], fields: dict[str, Any], prefix: str = "", required: bool = True) -> Errors:
    """A field error for each field that is missing (when `required`) or not of its type."""
    errors: Errors = {}
    for name, expected in fields.items():
        if body.get(name) is None:
            if required:
                errors[prefix + _pascal(name)] = [f"The {_pascal(name)} field is required."]
        elif not _type_ok(body[name], expected):
            errors[prefix + _pascal(name)] = [f"The value for {_pascal(name)} is not valid."]
    return errors


def _types(body: dict[str, Any], fields: dict[str, Any]) -> Errors:
    return _fields(body, fields, required=False)


def _contact_errors(contacts: Any, label: str) -> Errors:
    if contacts is None:
        return {}
    if not isinstance(contacts, list):
        return {label: ["A list of contacts is required."]}
    errors = {}
    for index, contact in enumerate(contacts):
        if not isinstance(contact, dict) or contact.get("type") not in ("Phone", "Email", "Fax", "MobilePhone"):
            errors[f"{label}[{index}].Type"] = ["The value is not valid. Values: Phone, Email, Fax, MobilePhone."]
        elif not isinstance(contact.get("value"), str) or not contact["value"]:
            errors[f"{label}[{index}].Value"] = ["The Value field is required."]
    return errors


def _date_errors(body: dict[str, Any], names: tuple[str, ...]) -> Errors:
    errors = {}
    for name in names:
        if isinstance(body.get(name), str):
            try:
                parse_when(body[name])
            except ValueError:
                errors[_pascal(name)] = [f"The value '{body[name]}' is not a valid date-time."]
    return errors


def _choice_error(body: dict[str, Any], name: str, choices: Any) -> Errors:
    """The vendor's answer to a value outside an enumeration (absent or null is no error)."""
    if body.get(name) is not None and body[name] not in choices:
        return {_pascal(name): [f"The value '{body[name]}' is not valid."]}
    return {}


def _customer_rules(body: dict[str, Any]) -> Errors:
    errors = _choice_error(body, "type", ("Residential", "Commercial"))
    if isinstance(body.get("name"), str) and not body["name"].strip():
        errors["Name"] = ["The Name field is required."]
    return errors


def _refuse(errors: Errors) -> None:
    """Answer the vendor's 400 with every field error found, if any."""
    if errors:
        raise ApiError(400, VALIDATION_TITLE, errors)


def _int_value(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise invalid(name, f"The value '{raw}' is not valid.") from None


def _int_arg(args: Any, name: str, default: int, minimum: int) -> int:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    value = _int_value(name, raw)
    if value < minimum:
        raise invalid(name, f"The field {name} must be at least {minimum}.")
    return value


def _bool_arg(args: Any, name: str, default: bool) -> bool:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    lowered = raw.strip().lower()
    if lowered not in ("true", "false"):
        raise invalid(name, f"The value '{raw}' is not valid.")
    return lowered == "true"


def _list_arg(args: Any, name: str) -> list[str]:
    return [part.strip() for raw in args.getlist(name) for part in raw.split(",") if part.strip()]


def _when_arg(name: str, raw: str) -> int:
    try:
        return parse_when(raw)
    except ValueError:
        raise invalid(name, f"The value '{raw}' is not valid.") from None


def _encode_token(entity: str, position: int) -> str:
    payload = f"{_TOKEN_PREFIX}|{entity}|{position}".encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _decode_token(raw: str) -> tuple[str, int] | None:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        prefix, entity, position = text.split("|")
        if prefix != _TOKEN_PREFIX:
            return None
        return entity, int(position)
    except (ValueError, UnicodeDecodeError):
        return None


def _at(view: dict[str, Any], path: Any) -> Any:
    """The value at a field path of a read view (None where a reference on the way is null)."""
    value: Any = view
    for name in path:
        value = (value or {}).get(name)
    return value


def _filter_test(kind: str, spec: tuple[str, ...], wanted: Any) -> Callable[[Row], bool]:
    """The check of one list filter (kinds: see vendor._BILL_FILTERS) for its parsed value."""
    if kind in ("eq", "int"):
        return lambda r: _at(r.view, spec) == wanted
    if kind == "ieq":
        return lambda r: r.view[spec[0]].lower() == wanted
    if kind == "contains":
        return lambda r: wanted in r.view[spec[0]].lower()
    if kind == "in":
        return lambda r: str(r.view.get(spec[0]) or "").lower() in wanted
    if kind == "ints":
        return lambda r: _at(r.view, spec) in wanted
    return lambda r: any(a[spec[1]] in wanted for a in r.view[spec[0]] or ())  # any


def _when_iso(text: str) -> str:
    """A request's date or date-time as the vendor prints it back."""
    return iso(parse_when(text))


def _ship_address(ship_to: dict[str, Any]) -> dict[str, Any]:
    """The read view's shipTo from a request's `shipTo{description, address}`."""
    ship = ship_to.get("address") or {}
    return _address(*(ship.get(key, "") for key in ADDRESS_FIELDS))


def _pick_address(raw: dict[str, Any], geo: bool = False) -> dict[str, Any]:
    """Only the address fields the read view has (request bodies may carry others)."""
    address = {key: raw.get(key) if key != "unit" else raw.get(key) or "" for key in ADDRESS_FIELDS}
    if geo:
        address.update(latitude=raw.get("latitude"), longitude=raw.get("longitude"))
    return address


def _patch(view: dict[str, Any], body: dict[str, Any], fields: dict[str, Any]) -> None:
    """Lay a PATCH body over a read view: request field -> view field (`a.b` nested), or (view field, conversion)."""
    for name, target in fields.items():
        if name in body:
            path, convert = (target, None) if isinstance(target, str) else target
            *parents, last = path.split(".")
            place = view
            for parent in parents:
                place = place[parent]
            place[last] = convert(body[name]) if convert else body[name]


External = tuple[str, list[tuple[str, str | None]], str]


def _parse_external(external: Any) -> External | None:
    """Validate an externalData patch: (application guid, key/value pairs, patch mode)."""
    if not external:
        return None
    if not isinstance(external, dict) or not external.get("applicationGuid"):
        raise invalid("ExternalData.ApplicationGuid", "The ApplicationGuid field is required.")
    try:
        guid = str(uuid.UUID(str(external["applicationGuid"])))
    except ValueError:
        raise invalid("ExternalData.ApplicationGuid", "The value is not a valid GUID.") from None
    pairs = external.get("externalData")
    if not isinstance(pairs, list) or not all(isinstance(p, dict) and isinstance(p.get("key"), str) for p in pairs):
        raise invalid("ExternalData.ExternalData", "A list of {key, value} pairs is required.")
    mode = external.get("patchMode") or "Replace"
    if mode not in ("Replace", "Merge"):
        raise invalid("ExternalData.PatchMode", f"The value '{mode}' is not valid.")
    return guid, [(p["key"], None if p.get("value") is None else str(p["value"])) for p in pairs], mode


def _apply_external(row: Row, parsed: External | None) -> None:
    if parsed is None:
        return
    guid, pairs, mode = parsed
    store = row.external.setdefault(guid, {})
    if mode == "Replace":
        store.clear()
    for key, value in pairs:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


# PATCH bodies laid over read views: request field -> view field, or (view field, conversion).
VENDOR_PATCH = {"name": ("name", str.strip), "active": "active", "memo": "memo",
                "isTruckReplenishment": "isTruckReplenishment", "deliveryOption": "deliveryOption",
                **{key: (f"contactInfo.{key}", lambda value: value or "")
                   for key in ("firstName", "lastName", "phone", "email", "fax")},
                "taxRate": ("defaultTaxRate", float), "restrictedMobileCreation": "isMobileCreationRestricted",
                "address": ("address", _pick_address)}
PO_PATCH = {**{key: key for key in ("vendorId", "typeId", "businessUnitId", "inventoryLocationId", "jobId",
                                    "technicianId", "projectId")},
            "memo": "summary", "vendorInvoiceNumber": "vendorDocumentNumber", "date": ("date", _when_iso),
            "requiredOn": ("requiredOn", _when_iso), "tax": ("tax", num), "shipping": ("shipping", num),
            "shipTo": ("shipTo", _ship_address)}
CUSTOMER_PATCH = {"name": ("name", str.strip), **{key: key for key in (
    "type", "doNotMail", "doNotService", "nationalAccount", "active", "tagTypeIds", "taxExempt", "paymentTermId",
    "creditLimit", "creditLimitBalance")}, "address": ("address", lambda address: _pick_address(address, geo=True))}
PAYMENT_PATCH = {"active": "active", "authCode": "authCode", "checkNumber": "checkNumber", "memo": "memo",
                 "status": "syncStatus", "paidOn": ("date", _when_iso)}
# The request fields of a PO item (an update also names the item's id).
PO_ITEM_FIELDS = {"skuId": int, "description": str, "vendorPartNumber": str, "quantity": NUMBER, "cost": NUMBER}
