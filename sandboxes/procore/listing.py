"""Procore's list answers: `filters[...]` (date ranges, ids, origin ids, soft-deleted rows),
`sort`, and bare-array pages with the `Total` / `Per-Page` / `Link` headers."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urlencode

from flask import Response, request

from sandboxes.kit.routes import json_response

from .values import field_errors, parse_range

if TYPE_CHECKING:
    from .sandbox import ProcoreSandbox

Row = dict[str, Any]
FILTER_KEY = re.compile(r"filters\[(\w+)\](\[\])?")
TEXT_FILTERS = ("status", "invoice_number", "vendor_id", "parent_id", "direct_cost_type")
SEARCHED = ("name", "abbreviated_name", "origin_code", "trade_name")
SORTABLE = ("id", "_updated", "_created", "name", "number", "code")


def query(sb: "ProcoreSandbox", table: str, scope: int | None, *,
          extra: tuple[str, Callable[[Row], bool]] | None = None) -> list[int]:
    """Ids matching `filters[...]` and `sort`, kept until the table's next write."""
    filters = tuple((match.group(1), tuple(request.args.getlist(key)))
                    for key in sorted(request.args) if (match := FILTER_KEY.fullmatch(key)))
    sort = request.args.get("sort", "")
    return sb.tables[table].cached((scope, filters, sort, extra[0] if extra else None),
                                   lambda: _query(sb, table, scope, filters, sort, extra[1] if extra else None))


def _query(sb: "ProcoreSandbox", table: str, scope: int | None, filters: tuple[tuple[str, tuple[str, ...]], ...],
           sort: str, extra: Callable[[Row], bool] | None) -> list[int]:
    predicates: list[Callable[[Row], bool]] = [extra] if extra else []
    include_deleted = None
    candidates: Iterable[int] | None = None  # None: the whole scope
    for name, values in filters:
        value = values[-1]
        if name == "include_deleted":
            if value not in ("only", "with"):
                raise field_errors(400, {"filters[include_deleted]": ["does not have a valid value"]})
            include_deleted = value
        elif name in ("updated_at", "created_at"):
            try:
                low, high = parse_range(value)
            except ValueError:
                raise field_errors(400, {f"filters[{name}]": ["is invalid; use an ISO-8601 range start...end"]}) from None
            column = "_" + name.split("_")[0]
            predicates.append(lambda row, c=column, lo=low, hi=high: (lo is None or row[c] >= lo) and (hi is None or row[c] <= hi))
        elif name == "id":
            try:
                wanted = {int(v) for raw in values for v in raw.strip("[]").split(",") if v.strip()}
            except ValueError:
                raise field_errors(400, {"filters[id]": ["is invalid"]}) from None
            predicates.append(lambda row, w=wanted: row["id"] in w)
        elif name == "origin_id":
            origins = {v.strip() for raw in values
                       for v in (raw[1:-1].split(",") if raw.startswith("[") and raw.endswith("]") else [raw])}
            predicates.append(lambda row, w=origins: row.get("origin_id") in w)
            if include_deleted is None and len(origins) <= 16:
                candidates = sorted({row["id"] for o in origins for row in sb.tables[table].lookup("origin_id", o)
                                     if row["_scope"] == scope})
        elif name in TEXT_FILTERS:
            wanted_text = {v.lower() for v in values}
            predicates.append(lambda row, f=name, w=wanted_text: str(row.get(f)).lower() in w)
        elif name == "search":
            predicates.append(lambda row, n=value.lower(): any(n in str(row.get(f) or "").lower() for f in SEARCHED))
        # Other documented filters (trade_id, standard_cost_code_id, ...) match everything here.
    rows = [row for row in sb.tables[table].scan(scope, None if include_deleted else candidates)
            if include_deleted == "with" or (row["_deleted"] is not None) == (include_deleted == "only")
            if all(p(row) for p in predicates)]
    named = sort.lstrip("-").split(",")[0]
    column = {"updated_at": "_updated", "created_at": "_created"}.get(named, named)
    if sort and column in SORTABLE:
        rows.sort(key=lambda row: (row.get(column) is None, row.get(column) or 0), reverse=sort.startswith("-"))
    return [row["id"] for row in rows]


def page(sb: "ProcoreSandbox", ids: list[int]) -> tuple[list[int], dict[str, str]]:
    """One page of `ids` and Procore's Total / Per-Page / Link headers."""
    try:
        number = max(1, int(request.args.get("page", 1)))
        per_page = int(request.args.get("per_page", sb.settings.default_per_page))
    except ValueError:
        raise field_errors(400, {"page": ["is invalid"]}) from None
    per_page = min(max(1, per_page), int(sb.settings.max_per_page))
    total, last = len(ids), max(1, math.ceil(len(ids) / per_page))
    headers = {"Total": str(total), "Per-Page": str(per_page)}
    if total > per_page:
        args = [(k, v) for k in request.args for v in request.args.getlist(k) if k not in ("page", "per_page")]

        def link(to: int, rel: str) -> str:
            text = urlencode(args + [("page", to), ("per_page", per_page)])
            return f'<{request.host_url.rstrip("/")}{request.path}?{text}>; rel="{rel}"'

        links = [link(1, "first")] if number > 1 else []
        links += [link(min(number - 1, last), "prev")] if number > 2 else []
        links += [link(number + 1, "next")] if number < last else []
        headers["Link"] = ", ".join(links + [link(last, "last")])
    start = (number - 1) * per_page
    return ids[start:start + per_page], headers


def listing(sb: "ProcoreSandbox", table: str, scope: int | None, render: Callable[[Row], dict[str, Any]],
            extra: tuple[str, Callable[[Row], bool]] | None = None) -> Response:
    with sb.lock:
        ids, headers = page(sb, query(sb, table, scope, extra=extra))
        body = [render(row) for row in sb.tables[table].scan(scope, ids)]
    return json_response(body, 200, headers)
