"""Reading ServiceTitan requests: JSON bodies, query parameters and continuation tokens, with
the vendor's validation messages."""

from __future__ import annotations

import base64
from typing import Any

from sandboxes.servicetitan.vendor import VALIDATION_TITLE, ApiError, _address, invalid, iso, parse_when


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


def _required(body: dict[str, Any], fields: dict[str, Any], prefix: str = "") -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for name, expected in fields.items():
        label = prefix + _pascal(name)
        if body.get(name) is None:
            errors[label] = [f"The {_pascal(name)} field is required."]
        elif not _type_ok(body[name], expected):
            errors[label] = [f"The value for {_pascal(name)} is not valid."]
    return errors


def _types(body: dict[str, Any], fields: dict[str, Any]) -> dict[str, list[str]]:
    return {_pascal(name): [f"The value for {_pascal(name)} is not valid."]
            for name, expected in fields.items() if body.get(name) is not None and not _type_ok(body[name], expected)}


def _contact_errors(contacts: Any, label: str) -> dict[str, list[str]]:
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


def _is_when(text: str) -> bool:
    try:
        parse_when(text)
    except ValueError:
        return False
    return True


def _when_arg(name: str, raw: str) -> int:
    try:
        return parse_when(raw)
    except ValueError:
        raise invalid(name, f"The value '{raw}' is not valid.") from None


_TOKEN_PREFIX = "c1"


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


def _refuse(errors: dict[str, list[str]]) -> None:
    """Answer the vendor's 400 with every field error found, if any."""
    if errors:
        raise ApiError(400, VALIDATION_TITLE, errors)


def _when_iso(text: str) -> str:
    """A request's date or date-time as the vendor prints it back."""
    return iso(parse_when(text))


def _ship_address(ship_to: dict[str, Any]) -> dict[str, Any]:
    """The read view's shipTo from a request's `shipTo{description, address}`."""
    ship = ship_to.get("address") or {}
    return _address(*(ship.get(key, "") for key in ("street", "unit", "city", "state", "zip", "country")))


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
