"""Paginator strategies: how the next page is asked for, decided from the page just read.

A connector's fetch turns one vendor answer into a `Page`: its rows, plus whatever the
answer says about what follows (a has-more flag, a total, a continuation token, a Link
header). A strategy turns that page and the params that fetched it into the params of
the next request, or None when the walk is over. One loop, `Paginator.pages`, drives every
strategy, so no connector writes its own.

Strategies: `OffsetPaging` (limit/offset, `$top`/`$skip`), `PageNumberPaging` (page with a
has-more flag or a total), `LinkHeaderPaging` (RFC 8288 `rel="next"`), `CursorPaging`
(continuation tokens) and `KeysetPaging` (rows after the last one's ordered key). The
`StepBackOnShrink` wrapper makes offset or page walks safe over a change window whose rows
leave it while it is read.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable, Iterator, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

import requests

RECENT_PAGES_KEPT = 2  # pages of keys remembered to drop rows re-read after a step back


@dataclass(frozen=True)
class Page:
    """One answer of a list endpoint, as much as the vendor told about what follows it."""

    rows: Sequence[Any]
    has_more: bool | None = None  # the vendor's own flag, when its answer carries one
    total: int | None = None  # rows matching the whole query, when the vendor counts them
    cursor: str | None = None  # continuation token for the next page
    links: Mapping[str, Mapping[str, str]] | None = None  # parsed Link header; None: the answer had none
    page_size: int | None = None  # rows per page as the server counts them (it may cap what was asked)
    request: Mapping[str, Any] = field(default_factory=dict)  # the params that fetched this page

    @classmethod
    def from_response(cls, response: requests.Response, rows: Sequence[Any], **facts: Any) -> "Page":
        """A page whose Link header, if the answer has one, is kept for `LinkHeaderPaging`."""
        links = dict(response.links) if "Link" in response.headers else None
        return cls(rows, links=links, **facts)


Fetch = Callable[[dict[str, Any]], Page]


class Paginator(ABC):
    """A strategy: the params of the first request, and of the one after each page."""

    size: int

    @abstractmethod
    def first(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The params of the first request: the caller's filters plus this strategy's own."""

    @abstractmethod
    def next(self, page: Page) -> dict[str, Any] | None:
        """The params of the request after `page`, or None when `page` was the last."""

    def back(self, request: Mapping[str, Any], lost: int) -> dict[str, Any] | None:
        """The params that re-read `request`'s position after `lost` rows left the result set
        before it; None when the strategy cannot step back (or is already at the start)."""
        return None

    def pages(self, fetch: Fetch, params: Mapping[str, Any] | None = None) -> Iterator[Page]:
        """Every page, one request at a time, nothing kept between pages."""
        request: dict[str, Any] | None = self.first(params or {})
        while request is not None:
            page = replace(fetch(request), request=request)
            yield page
            request = self.next(page)

    def rows(self, fetch: Fetch, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        for page in self.pages(fetch, params):
            yield from page.rows


def _more_by_count(page: Page, size: int) -> bool:
    """Without a flag or a total, only a short page tells that it was the last."""
    return page.has_more if page.has_more is not None else len(page.rows) >= size


@dataclass(frozen=True)
class OffsetPaging(Paginator):
    """`limit`/`offset` (OData's `$top`/`$skip`): the next page starts where this one ended.

    The walk ends on an empty or short page, on the vendor's has-more flag when it sends one,
    or when the offset reaches the total the vendor counted.
    """

    limit_param: str
    offset_param: str
    size: int

    def first(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**params, self.limit_param: self.size, self.offset_param: 0}

    def next(self, page: Page) -> dict[str, Any] | None:
        if not page.rows or not _more_by_count(page, self.size):
            return None
        offset = int(page.request[self.offset_param]) + len(page.rows)
        if page.total is not None and offset >= page.total:
            return None
        return {**page.request, self.offset_param: offset}

    def back(self, request: Mapping[str, Any], lost: int) -> dict[str, Any] | None:
        offset = int(request[self.offset_param])
        return None if offset == 0 else {**request, self.offset_param: max(0, offset - lost)}


@dataclass(frozen=True)
class PageNumberPaging(Paginator):
    """`page`/`pageSize`: ask for the next page number while the vendor says more follow.

    "More" is the vendor's has-more flag when it sends one, else the page count against the
    total it counted (in its own page size, which may be smaller than the one asked for),
    else whether this page came back full.
    """

    page_param: str
    size_param: str
    size: int
    first_page: int = 1

    def first(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**params, self.page_param: self.first_page, self.size_param: self.size}

    def next(self, page: Page) -> dict[str, Any] | None:
        if not page.rows or not self._more(page):
            return None
        return {**page.request, self.page_param: int(page.request[self.page_param]) + 1}

    def back(self, request: Mapping[str, Any], lost: int) -> dict[str, Any] | None:
        number = int(request[self.page_param])
        if number <= self.first_page:
            return None
        return {**request, self.page_param: max(self.first_page, number - math.ceil(lost / self.size))}

    def _more(self, page: Page) -> bool:
        if page.has_more is not None:
            return page.has_more
        if page.total is not None:
            read = int(page.request[self.page_param]) - self.first_page + 1
            return read * (page.page_size or self.size) < page.total
        return len(page.rows) >= self.size


@dataclass(frozen=True)
class LinkHeaderPaging(PageNumberPaging):
    """Follow the `Link: <...>; rel="next"` header (RFC 8288) while the answers carry one.

    The next link names the same list; its query (the page and size it chose) is laid over
    the params already sent, so a filter the link leaves out still applies. An answer with
    no Link header at all falls back to page numbers, as `PageNumberPaging` decides them.
    """

    def next(self, page: Page) -> dict[str, Any] | None:
        if page.links is None:
            return super().next(page)
        target = (page.links.get("next") or {}).get("url")
        if not target or not page.rows:
            return None
        return {**page.request, **dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))}


@dataclass(frozen=True)
class CursorPaging(Paginator):
    """A continuation token from each answer is sent back to get the page after it.

    A `cursor_param` already in the first params resumes a walk where an earlier one
    stopped. The walk ends when the vendor says nothing more follows, sends no token, or
    answers an empty page with the token it was given (no progress).
    """

    cursor_param: str
    size: int = 0  # 0: the vendor's own page size (its feed takes none)
    size_param: str | None = None

    def first(self, params: Mapping[str, Any]) -> dict[str, Any]:
        sized = {self.size_param: self.size} if self.size_param and self.size else {}
        return {**params, **sized}

    def next(self, page: Page) -> dict[str, Any] | None:
        if page.has_more is False or not page.cursor:
            return None
        if page.has_more is None and not page.rows:
            return None
        if not page.rows and page.cursor == page.request.get(self.cursor_param):
            return None
        return {**page.request, self.cursor_param: page.cursor}


@dataclass(frozen=True)
class KeysetPaging(Paginator):
    """Rows ordered on `order` (ending with a unique key); the next page is every row after
    the last one's values, so rows inserted or changed mid-walk neither shift nor repeat.

    The next request carries those values under `after_param`; the connector's fetch turns
    them into the vendor's "greater than" filter.
    """

    order: tuple[str, ...]
    size: int
    size_param: str = "limit"
    after_param: str = "after"

    def first(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {**params, self.size_param: self.size}

    def next(self, page: Page) -> dict[str, Any] | None:
        if not page.rows or not _more_by_count(page, self.size):
            return None
        last = page.rows[-1]
        return {**page.request, self.after_param: tuple(last.get(column) for column in self.order)}


@dataclass(frozen=True)
class StepBackOnShrink(Paginator):
    """Offset or page walks over a result set that can only lose rows while it is read.

    A change window `[since, until)` loses a row that changes again mid-walk (its new stamp
    is past `until`), and every unread row moves one place earlier: a plain walk skips one.
    When a page reports a smaller total than the page before, the unread rows have moved
    back by the difference; the walk steps back that far, reads again, and drops rows it
    already yielded (by `key`). Rows whose key is None are never dropped.
    """

    inner: Paginator
    key: Callable[[Any], Hashable]
    pages_kept: int = RECENT_PAGES_KEPT

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.inner.size

    def first(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.inner.first(params)

    def next(self, page: Page) -> dict[str, Any] | None:
        return self.inner.next(page)

    def back(self, request: Mapping[str, Any], lost: int) -> dict[str, Any] | None:
        return self.inner.back(request, lost)

    def pages(self, fetch: Fetch, params: Mapping[str, Any] | None = None) -> Iterator[Page]:
        request: dict[str, Any] | None = self.inner.first(params or {})
        known_total: int | None = None
        recent: deque[set[Hashable]] = deque()
        kept = self.pages_kept
        while request is not None:
            page = replace(fetch(request), request=request)
            if known_total is not None and page.total is not None and page.total < known_total:
                lost = known_total - page.total
                known_total = page.total
                earlier = self.inner.back(request, lost)
                if earlier is not None:
                    # A step back re-reads this many pages already yielded: remember them all.
                    kept = max(kept, math.ceil(lost / max(1, self.inner.size)) + 1)
                    request = earlier
                    continue
            if page.total is not None:
                known_total = page.total
            keys = [self.key(row) for row in page.rows]
            fresh = [row for row, key in zip(page.rows, keys)
                     if key is None or not any(key in seen for seen in recent)]
            recent.append({key for key in keys if key is not None})
            while len(recent) > kept:
                recent.popleft()
            yield replace(page, rows=fresh)
            request = self.inner.next(page)


__all__ = [
    "CursorPaging", "Fetch", "KeysetPaging", "LinkHeaderPaging", "OffsetPaging", "Page", "PageNumberPaging",
    "Paginator", "StepBackOnShrink",
]
