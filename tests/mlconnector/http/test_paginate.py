"""Paginator strategies: the requests each one makes against small in-memory lists."""

from __future__ import annotations

from typing import Any, Callable

import requests

from mlconnector.http.paginate import (
    CursorPaging,
    KeysetPaging,
    LinkHeaderPaging,
    OffsetPaging,
    Page,
    PageNumberPaging,
    StepBackOnShrink,
)


def recorder(answer: Callable[[dict[str, Any]], Page]) -> tuple[Callable[[dict[str, Any]], Page], list[dict[str, Any]]]:
    """A fetch that answers from `answer` and remembers every request it was given."""
    sent: list[dict[str, Any]] = []

    def fetch(request: dict[str, Any]) -> Page:
        sent.append(dict(request))
        return answer(request)

    return fetch, sent


def rows(*ids: int) -> list[dict[str, int]]:
    return [{"id": i} for i in ids]


# ---- offset ------------------------------------------------------------------------------------------


def test_offset_paging_walks_until_a_short_page_and_keeps_the_filters() -> None:
    data = rows(*range(1, 8))
    fetch, sent = recorder(lambda r: Page(data[r["$skip"]:r["$skip"] + r["$top"]]))
    got = [row["id"] for row in OffsetPaging("$top", "$skip", 3).rows(fetch, {"$filter": "x eq 1"})]
    assert got == list(range(1, 8))
    assert sent == [{"$filter": "x eq 1", "$top": 3, "$skip": s} for s in (0, 3, 6)]


def test_offset_paging_stops_at_the_total_without_an_empty_page() -> None:
    data = rows(1, 2, 3, 4)
    fetch, sent = recorder(lambda r: Page(data[r["offset"]:r["offset"] + r["limit"]], total=4))
    assert [row["id"] for row in OffsetPaging("limit", "offset", 2).rows(fetch)] == [1, 2, 3, 4]
    assert [r["offset"] for r in sent] == [0, 2]  # a full last page, and the total says it was the last


def test_offset_paging_trusts_the_vendors_has_more_flag_over_the_page_length() -> None:
    pages = {0: Page(rows(1), has_more=True), 1: Page(rows(2), has_more=False)}
    fetch, sent = recorder(lambda r: pages[r["offset"]])
    assert [row["id"] for row in OffsetPaging("limit", "offset", 5).rows(fetch)] == [1, 2]
    assert len(sent) == 2


def test_offset_back_steps_by_the_rows_lost_and_not_below_zero() -> None:
    paging = OffsetPaging("limit", "offset", 10)
    assert paging.back({"limit": 10, "offset": 20}, 3) == {"limit": 10, "offset": 17}
    assert paging.back({"limit": 10, "offset": 2}, 5) == {"limit": 10, "offset": 0}
    assert paging.back({"limit": 10, "offset": 0}, 5) is None


# ---- page number with has-more ---------------------------------------------------------------------------


def test_page_number_paging_follows_has_more() -> None:
    pages = {1: Page(rows(1, 2), has_more=True), 2: Page(rows(3), has_more=False)}
    fetch, sent = recorder(lambda r: pages[r["page"]])
    assert [row["id"] for row in PageNumberPaging("page", "pageSize", 2).rows(fetch, {"sort": "+Id"})] == [1, 2, 3]
    assert sent == [{"sort": "+Id", "page": 1, "pageSize": 2}, {"sort": "+Id", "page": 2, "pageSize": 2}]


def test_page_number_paging_counts_pages_against_the_total_in_the_servers_page_size() -> None:
    # Asked for 10 a page, the server caps at 2 and says so: 5 rows are three pages, not one.
    data = rows(1, 2, 3, 4, 5)
    fetch, sent = recorder(lambda r: Page(data[(r["page"] - 1) * 2:r["page"] * 2], total=5, page_size=2))
    assert [row["id"] for row in PageNumberPaging("page", "per_page", 10).rows(fetch)] == [1, 2, 3, 4, 5]
    assert [r["page"] for r in sent] == [1, 2, 3]


def test_page_number_paging_without_flag_or_total_stops_on_a_short_page() -> None:
    data = rows(1, 2, 3, 4)
    fetch, sent = recorder(lambda r: Page(data[(r["page"] - 1) * 2:r["page"] * 2]))
    assert [row["id"] for row in PageNumberPaging("page", "per_page", 2).rows(fetch)] == [1, 2, 3, 4]
    assert [r["page"] for r in sent] == [1, 2, 3]  # page 3 is empty: that ends it


def test_page_number_back_moves_whole_pages() -> None:
    paging = PageNumberPaging("page", "pageSize", 3)
    assert paging.back({"page": 4, "pageSize": 3}, 4) == {"page": 2, "pageSize": 3}
    assert paging.back({"page": 2, "pageSize": 3}, 9) == {"page": 1, "pageSize": 3}
    assert paging.back({"page": 1, "pageSize": 3}, 1) is None


# ---- Link header ------------------------------------------------------------------------------------------


def _response(link: str | None) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    if link is not None:
        response.headers["Link"] = link
    return response


def test_link_header_paging_follows_rel_next_and_keeps_filters_the_link_leaves_out() -> None:
    url = "https://api.example/rest/v1.0/vendors"
    links = {1: f'<{url}?page=2&per_page=2>; rel="next", <{url}?page=3&per_page=2>; rel="last"',
             2: f'<{url}?page=3&per_page=2>; rel="next"', 3: f'<{url}?page=1&per_page=2>; rel="first"'}
    fetch, sent = recorder(lambda r: Page.from_response(_response(links[int(r["page"])]), rows(int(r["page"]))))
    got = [row["id"] for row in LinkHeaderPaging("page", "per_page", 2).rows(fetch, {"company_id": 7})]
    assert got == [1, 2, 3]
    assert sent == [{"company_id": 7, "page": 1, "per_page": 2}, {"company_id": 7, "page": "2", "per_page": "2"},
                    {"company_id": 7, "page": "3", "per_page": "2"}]


def test_link_header_paging_falls_back_to_page_numbers_without_a_link_header() -> None:
    fetch, sent = recorder(lambda r: Page.from_response(_response(None), rows(1, 2) if r["page"] == 1 else [], total=2))
    assert [row["id"] for row in LinkHeaderPaging("page", "per_page", 2).rows(fetch)] == [1, 2]
    assert len(sent) == 1  # the total says one page holds them all
    assert Page.from_response(_response(None), []).links is None


# ---- cursor ------------------------------------------------------------------------------------------------


def test_cursor_paging_sends_each_continuation_token_back_and_resumes_from_one() -> None:
    answers = {None: Page(rows(1, 2), has_more=True, cursor="c1"), "c1": Page(rows(3), has_more=True, cursor="c2"),
               "c2": Page([], has_more=False, cursor="c2")}
    fetch, sent = recorder(lambda r: answers[r.get("from")])
    assert [row["id"] for row in CursorPaging("from").rows(fetch)] == [1, 2, 3]
    assert [r.get("from") for r in sent] == [None, "c1", "c2"]
    fetch, sent = recorder(lambda r: answers[r.get("from")])
    assert [row["id"] for row in CursorPaging("from").rows(fetch, {"from": "c1"})] == [3]


def test_cursor_paging_stops_when_an_empty_page_makes_no_progress() -> None:
    fetch, sent = recorder(lambda r: Page([], has_more=True, cursor=r.get("from") or "c0"))
    assert list(CursorPaging("from").rows(fetch, {"from": "c0"})) == []
    assert len(sent) == 1


def test_cursor_paging_can_ask_for_a_page_size() -> None:
    fetch, sent = recorder(lambda r: Page(rows(1)))
    list(CursorPaging("cursor", size=50, size_param="limit").rows(fetch))
    assert sent == [{"limit": 50}]  # no flag and no token: one page


# ---- keyset ---------------------------------------------------------------------------------------------


def test_keyset_paging_continues_after_the_last_rows_ordered_values() -> None:
    data = [{"stamp": "10:00", "code": c} for c in "abc"] + [{"stamp": "10:01", "code": "a"}]

    def answer(request: dict[str, Any]) -> Page:
        after = request.get("after")
        later = [r for r in data if after is None or (r["stamp"], r["code"]) > after]
        return Page(later[:request["limit"]])

    fetch, sent = recorder(answer)
    got = [(r["stamp"], r["code"]) for r in KeysetPaging(("stamp", "code"), 2).rows(fetch, {"where": "open"})]
    assert got == [("10:00", "a"), ("10:00", "b"), ("10:00", "c"), ("10:01", "a")]
    assert [r.get("after") for r in sent] == [None, ("10:00", "b"), ("10:01", "a")]
    assert all(r["where"] == "open" and r["limit"] == 2 for r in sent)


def test_keyset_paging_trusts_the_vendors_has_more_flag() -> None:
    fetch, sent = recorder(lambda r: Page(rows(1, 2), has_more=False))
    assert len(list(KeysetPaging(("id",), 2).rows(fetch))) == 2
    assert len(sent) == 1


# ---- step back when the result set shrinks -----------------------------------------------------------------


def shrinking_window(size: int, leave_after_first: set[int]) -> Callable[[dict[str, Any]], Page]:
    """Ten rows; once the first page has been served, some rows leave the result set."""
    state = {"rows": list(range(1, 11)), "served": 0}

    def answer(request: dict[str, Any]) -> Page:
        if state["served"] == 1:
            state["rows"] = [i for i in state["rows"] if i not in leave_after_first]
        state["served"] += 1
        current = state["rows"]
        start = request["offset"] if "offset" in request else (request["page"] - 1) * size
        return Page(rows(*current[start:start + size]), total=len(current))

    return answer


def test_plain_offset_paging_skips_a_row_when_an_earlier_one_leaves() -> None:
    fetch, _ = recorder(shrinking_window(3, {2}))
    assert [r["id"] for r in OffsetPaging("limit", "offset", 3).rows(fetch)] == [1, 2, 3, 5, 6, 7, 8, 9, 10]


def test_step_back_on_shrink_reads_every_row_once_with_offsets() -> None:
    fetch, sent = recorder(shrinking_window(3, {2}))
    paging = StepBackOnShrink(OffsetPaging("limit", "offset", 3), key=lambda row: row["id"])
    assert [r["id"] for r in paging.rows(fetch)] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert [r["offset"] for r in sent] == [0, 3, 2, 5, 8]


def test_step_back_on_shrink_reads_every_row_once_with_page_numbers() -> None:
    fetch, sent = recorder(shrinking_window(3, {1, 2, 3, 4}))  # more rows left than a page holds
    paging = StepBackOnShrink(PageNumberPaging("page", "pageSize", 3), key=lambda row: row["id"])
    assert [r["id"] for r in paging.rows(fetch)] == [1, 2, 3, 5, 6, 7, 8, 9, 10]  # 4 left unread: the next poll's
    assert [r["page"] for r in sent] == [1, 2, 1, 2]


def test_step_back_on_shrink_drops_repeats_but_never_rows_without_a_key() -> None:
    pages = {0: Page([{"id": 1}, {"id": None}], total=4), 2: Page([{"id": 1}, {"id": None}], total=4)}
    fetch, _ = recorder(lambda r: pages[r["offset"]])
    paging = StepBackOnShrink(OffsetPaging("limit", "offset", 2), key=lambda row: row["id"])
    assert list(paging.rows(fetch)) == [{"id": 1}, {"id": None}, {"id": None}]  # a row that came twice is kept once
