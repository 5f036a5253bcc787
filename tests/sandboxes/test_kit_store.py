"""The shared table store: keys, ids, indexes, parents, stamps, soft delete and caches."""

from __future__ import annotations

from pathlib import Path
from random import Random

import pytest

from sandboxes.kit import store
from sandboxes.kit.store import DuplicateKey, Stamps, Table, casefold, collated, exact, hex_ids


def names(rows: list[dict]) -> list[str]:
    return [r["name"] for r in rows]


# ---- keys ------------------------------------------------------------------------------------


def test_keys_ignore_case_by_default() -> None:
    table = Table("code")
    table.put({"code": "ACME", "name": "Acme"})
    assert table.get("acme")["name"] == "Acme"
    assert ("AcMe",) in table and "acme" in table
    table.put({"code": "acme", "name": "Acme again"})  # same key: replaces, does not add
    assert len(table) == 1 and table.get("ACME")["name"] == "Acme again"


def test_exact_and_collated_keys() -> None:
    strict = Table("sys_id", normalise=exact)
    strict.put({"sys_id": "AbC", "name": "x"})
    assert strict.get("abc") is None and strict.get("AbC") is not None
    sql = Table(("company", "vendor"), normalise=collated)
    sql.put({"company": "EPIC06", "vendor": "ACME  ", "name": "x"})
    assert sql.get("epic06", "acme")["name"] == "x"
    assert collated(5) == 5 and casefold(None) is None


def test_rows_list_in_key_order_with_numbers_compared_as_numbers() -> None:
    table = Table(("num",))
    for num in (10, 2, 33, 1):
        table.put({"num": num, "name": f"n{num}"})
    assert [r["num"] for r in table.rows()] == [1, 2, 10, 33]
    table.put({"num": 5, "name": "n5"})  # into an already built order
    table.purge(2)
    assert [r["num"] for r in table] == [1, 5, 10, 33]


def test_insertion_order_keeps_first_store_position() -> None:
    table = Table("id", normalise=exact, order="insertion")
    for sid in ("c", "a", "b"):
        table.put({"id": sid, "name": sid})
    table.put({"id": "c", "name": "c2"})  # a replaced row keeps its place
    assert names(table.rows()) == ["c2", "a", "b"]
    table.purge("a")
    table.put({"id": "a", "name": "a again"})  # stored again: now the newest
    assert names(table.rows()) == ["c2", "b", "a again"]
    assert names(table.lookup("name", "b")) == ["b"]


def test_missing_key_fields_and_wrong_arity_are_refused() -> None:
    table = Table(("a", "b"))
    with pytest.raises(ValueError):
        table.put({"a": 1})
    with pytest.raises(TypeError):
        table.get(1)
    with pytest.raises(ValueError):
        Table(())


def test_add_refuses_a_taken_key_and_put_replaces() -> None:
    table = Table("code")
    table.add({"code": "A", "name": "first"})
    with pytest.raises(DuplicateKey):
        table.add({"code": "a", "name": "second"})
    assert table.get("A")["name"] == "first"


# ---- generated ids ---------------------------------------------------------------------------


def test_integer_ids_count_on_past_loaded_ids_and_restart_on_clear() -> None:
    table = Table("id", ids=100)
    assert table.put({"name": "a"})["id"] == 100
    assert table.put({"id": 500, "name": "loaded"})["id"] == 500
    assert table.new_id() == 501  # reserved: a row built before it is stored
    assert table.put({"name": "b"})["id"] == 502
    assert table.put({"id": 7, "name": "low"})["id"] == 7  # a lower explicit id does not rewind
    assert table.put({"name": "c"})["id"] == 503
    table.clear()
    assert table.put({"name": "a"})["id"] == 100  # a reseed gives the same ids


def test_callable_ids_are_redrawn_on_collision_and_indexed_outside_the_key() -> None:
    drawn = iter(["x1", "x1", "x2"])
    table = Table(("kind", "number"), ids=lambda: next(drawn), id_field="id")
    first = table.put({"kind": "Bill", "number": "1"})
    second = table.put({"kind": "Bill", "number": "2"})
    assert (first["id"], second["id"]) == ("x1", "x2")
    assert table.one("id", "x2") is second
    with pytest.raises(ValueError):
        Table(("a", "b"), ids=1)  # which field would get the id?
    with pytest.raises(TypeError):
        Table("code").new_id()


def test_hex_ids_are_32_hex_digits_and_repeatable_from_a_seed() -> None:
    a, b = hex_ids(Random(7)), hex_ids(Random(7))
    first = [a() for _ in range(5)]
    assert first == [b() for _ in range(5)]
    assert all(len(v) == 32 and int(v, 16) >= 0 for v in first)
    assert len(set(first)) == 5
    assert len(hex_ids()()) == 32


# ---- indexes ---------------------------------------------------------------------------------


def test_index_follows_an_in_place_change_put_again() -> None:
    table = Table("id", ids=1, indexed=("vendor",))
    row = table.put({"vendor": "ACME", "name": "po1"})
    table.put({"vendor": "acme", "name": "po2"})
    assert names(table.lookup("vendor", "Acme")) == ["po1", "po2"]
    row["vendor"] = "Beta"  # the old value is gone from the dict; the store remembers it
    table.put(row)
    assert names(table.lookup("vendor", "acme")) == ["po2"]
    assert names(table.lookup("vendor", "BETA")) == ["po1"]


def test_index_follows_replace_and_removal() -> None:
    table = Table("id", ids=1, indexed=("vendor",))
    table.put({"vendor": "A", "name": "one"})
    table.put({"id": 1, "vendor": "B", "name": "one v2"})  # a new dict for the same key
    assert table.lookup("vendor", "A") == [] and names(table.lookup("vendor", "B")) == ["one v2"]
    table.purge(1)
    assert table.lookup("vendor", "B") == [] and table.one("vendor", "B") is None


def test_an_undeclared_field_gets_an_index_that_is_then_kept() -> None:
    table = Table("id", ids=1)
    row = table.put({"city": "Denver", "name": "a"})
    table.put({"city": "Austin", "name": "b"})
    assert names(table.lookup("city", "denver")) == ["a"]
    row["city"] = "Austin"
    table.put(row)
    table.put({"city": "Denver", "name": "c"})
    assert names(table.lookup("city", "Austin")) == ["a", "b"]
    assert names(table.lookup("city", "Denver")) == ["c"]


# ---- parents ---------------------------------------------------------------------------------


def test_children_in_key_order_and_moved_when_the_parent_changes() -> None:
    lines = Table(("doc", "line"), parent=("doc",))
    for line in (3, 1, 2):
        lines.put({"doc": "PO1", "line": line, "name": f"l{line}"})
    lines.put({"doc": "PO2", "line": 1, "name": "other"})
    assert names(lines.children("po1")) == ["l1", "l2", "l3"]
    lines.purge("PO1", 2)
    assert names(lines.children("PO1")) == ["l1", "l3"]
    assert lines.children("nope") == []
    with pytest.raises(TypeError):
        lines.children("PO1", 1)
    with pytest.raises(TypeError):
        Table("id").children(1)


def test_children_and_lookups_come_in_key_order_whatever_the_write_order() -> None:
    lines = Table(("doc", "line"), parent=("doc",), indexed=("vendor",))
    numbers = list(range(60))
    Random(3).shuffle(numbers)
    for n in numbers:
        lines.put({"doc": "D", "line": f"L{n:03d}", "vendor": "V", "name": f"L{n:03d}"})
    expected = [f"L{n:03d}" for n in range(60)]
    assert names(lines.children("d")) == expected
    assert names(lines.lookup("vendor", "v")) == expected


def test_children_by_a_parent_outside_the_key() -> None:
    items = Table("id", ids=1, parent=("holder",))
    first = items.put({"holder": 7, "name": "a"})
    items.put({"holder": 7, "name": "b"})
    first["holder"] = 8
    items.put(first)
    assert names(items.children(7)) == ["b"] and names(items.children(8)) == ["a"]


# ---- versions and the cache ------------------------------------------------------------------


def test_every_write_bumps_the_version() -> None:
    table = Table("id", ids=1, deleted_field="deleted")
    seen = [table.version]
    table.put({"name": "a"})
    seen.append(table.version)
    table.touch(1)
    seen.append(table.version)
    table.touch()
    seen.append(table.version)
    table.remove(1)
    seen.append(table.version)
    table.purge(1)
    seen.append(table.version)
    table.clear()
    seen.append(table.version)
    assert seen == sorted(set(seen))  # strictly rising, never reset
    before = table.version
    table.purge(99)  # nothing there: nothing changed
    assert table.version == before


def test_cached_answers_last_until_a_write() -> None:
    table = Table("id", ids=1)
    table.put({"name": "a"})
    calls: list[int] = []

    def compute() -> list[str]:
        calls.append(1)
        return names(table.rows())

    assert table.cached("name ne null", compute) == ["a"]
    assert table.cached("name ne null", compute) == ["a"]
    assert len(calls) == 1
    table.put({"name": "b"})
    assert table.cached("name ne null", compute) == ["a", "b"]
    assert len(calls) == 2


def test_cache_keeps_the_most_recently_used() -> None:
    table = Table("id", cache_size=2)
    table.cached("a", lambda: 1)
    table.cached("b", lambda: 2)
    table.cached("a", lambda: 1)  # a is now the newest
    table.cached("c", lambda: 3)  # evicts b
    assert table.cached("a", lambda: "recomputed") == 1
    assert table.cached("b", lambda: "recomputed") == "recomputed"


def test_rows_list_is_reused_until_a_write() -> None:
    table = Table("id", ids=1)
    table.put({"name": "a"})
    listed = table.rows()
    assert table.rows() is listed
    table.put({"id": 1, "name": "a2"})
    assert table.rows() is not listed and names(table.rows()) == ["a2"]


# ---- stamps and change feeds -----------------------------------------------------------------


def test_changed_since_is_in_stamp_order_with_each_row_once() -> None:
    table = Table("id", ids=1, stamp_field="rev")
    a = table.put({"name": "a"})
    table.put({"name": "b"})
    table.put({"name": "c"})
    table.put(a)  # a changes again: it moves to the end, and only appears there
    assert names(table.changed_since(0)) == ["b", "c", "a"]
    assert a["rev"] == table.stamp_of(a) == table.last_stamp == 4


def test_changed_since_boundary_is_exclusive_unless_asked() -> None:
    table = Table("id", ids=1, stamp_field="rev")
    for name in "abcd":
        table.put({"name": name})
    assert names(table.changed_since(2)) == ["c", "d"]
    assert names(table.changed_since(2, inclusive=True)) == ["b", "c", "d"]
    assert table.changed_since(4) == [] and names(table.changed_since(4, inclusive=True)) == ["d"]
    assert names(table.changed_since(0, limit=2)) == ["a", "b"]
    assert names(table.changed_since(-5)) == ["a", "b", "c", "d"]


def test_a_shared_stamp_source_orders_writes_across_tables() -> None:
    stamps = Stamps()
    heads, lines = Table("id", ids=1, stamps=stamps), Table("id", ids=1, stamps=stamps)
    heads.put({"name": "h1"})
    lines.put({"name": "l1"})
    heads.put({"name": "h2"})
    assert [heads.stamp_of(r) for r in heads.rows()] == [1, 3]
    assert names(lines.changed_since(1)) == ["l1"] and names(heads.changed_since(1)) == ["h2"]
    assert stamps.last == 3 and heads.last_stamp == 3 and lines.last_stamp == 2
    heads.clear()  # stamps are never reused, even after a reset
    assert heads.stamp_of(heads.put({"name": "h1"})) == 4


def test_stamps_advance_past_loaded_values() -> None:
    stamps = Stamps(10)
    stamps.advance_to(50)
    stamps.advance_to(20)
    assert stamps.next() == 51


def test_purged_rows_leave_the_feed_and_deleted_ones_stay_in_it() -> None:
    table = Table("id", ids=1, deleted_field="deleted_at")
    for name in "abc":
        table.put({"name": name})
    table.purge(1)
    table.remove(2, mark="2025-01-06T00:00:00Z")
    assert names(table.changed_since(0)) == ["c", "b"]  # the deletion is b's newest change
    assert names(table.changed_since(0, deleted="hide")) == ["c"]
    assert names(table.changed_since(0, deleted="only")) == ["b"]


def test_a_feed_survives_many_rewrites_of_few_rows() -> None:
    table = Table("id", ids=1)
    rows = [table.put({"name": n}) for n in "abc"]
    for turn in range(2000):
        table.put(rows[turn % 3])
    assert len(table._log) <= 2 * len(table) + 257  # stale entries are compacted away
    assert names(table.changed_since(0)) == ["c", "a", "b"]  # the last turns wrote c, a, b
    assert names(table.changed_since(table.last_stamp - 1)) == ["b"]


def test_stamps_taken_out_of_order_are_still_answered_in_order() -> None:
    class Scripted(Stamps):
        """Another thread took stamp 3 and 4 and wrote later than the one that took 5."""

        def __init__(self) -> None:
            super().__init__()
            self.given = iter([5, 3, 4])

        def next(self) -> int:
            return next(self.given)

    table = Table("id", ids=1, stamps=Scripted())
    for name in "xyz":
        table.put({"name": name})
    assert names(table.changed_since(0)) == ["y", "z", "x"]
    assert names(table.changed_since(3)) == ["z", "x"]


def test_touch_restamps_one_row() -> None:
    table = Table("id", ids=1)
    table.put({"name": "parent"})
    table.put({"name": "other"})
    table.touch(1)
    assert names(table.changed_since(0)) == ["other", "parent"]
    with pytest.raises(KeyError):
        table.touch(42)


# ---- soft delete -----------------------------------------------------------------------------


def test_soft_deleted_rows_are_hidden_but_keep_their_key() -> None:
    table = Table("id", ids=1, indexed=("vendor",), parent=("doc",), deleted_field="deleted")
    table.put({"vendor": "A", "doc": 1, "name": "keep"})
    table.put({"vendor": "A", "doc": 1, "name": "gone"})
    removed = table.remove(2, mark=1700000000)
    assert removed is not None and removed["deleted"] == 1700000000
    assert table.get(2) is None and table.get(2, deleted="with")["name"] == "gone"
    assert names(table.rows()) == ["keep"] and len(table) == 1
    assert names(table.rows("only")) == ["gone"] and names(table.rows("with")) == ["keep", "gone"]
    assert names(table.lookup("vendor", "a")) == ["keep"]
    assert names(table.lookup("vendor", "a", deleted="with")) == ["keep", "gone"]
    assert names(table.children(1)) == ["keep"]
    with pytest.raises(DuplicateKey):
        table.add({"id": 2, "name": "reuse"})
    table.purge(2)
    assert table.get(2, deleted="with") is None and 2 not in table
    assert table.remove(99) is None


def test_a_row_put_back_without_its_mark_is_live_again() -> None:
    table = Table("id", ids=1, deleted_field="deleted")
    row = table.put({"name": "a", "deleted": None})
    table.remove(1)
    row["deleted"] = None
    table.put(row)
    assert names(table.rows()) == ["a"]


def test_without_soft_delete_remove_is_for_good() -> None:
    table = Table("id", ids=1)
    table.put({"name": "a"})
    assert table.remove(1)["name"] == "a"
    assert 1 not in table and table.rows("with") == []


# ---- orderings on other fields ---------------------------------------------------------------


def test_range_bounds_on_a_time_field() -> None:
    table = Table("id", ids=1)
    for name, when in (("c", "2025-01-03"), ("a", "2025-01-01"), ("none", None), ("b", "2025-01-02"),
                       ("b2", "2025-01-02")):
        table.put({"name": name, "updated": when})
    assert names(table.ordered_by("updated")) == ["none", "a", "b", "b2", "c"]  # None first, ties in key order
    assert names(table.range("updated", ge="2025-01-02")) == ["b", "b2", "c"]
    assert names(table.range("updated", gt="2025-01-02")) == ["c"]
    assert names(table.range("updated", lt="2025-01-02")) == ["a"]  # a bounded range holds no None
    assert names(table.range("updated", le="2025-01-02")) == ["a", "b", "b2"]
    assert names(table.range("updated", gt="2025-01-01", lt="2025-01-03")) == ["b", "b2"]


def test_range_sees_writes_made_after_it_was_built() -> None:
    table = Table("id", ids=1, deleted_field="deleted")
    first = table.put({"name": "a", "updated": 1})
    table.put({"name": "b", "updated": 2})
    assert names(table.range("updated", ge=2)) == ["b"]
    first["updated"] = 3
    table.put(first)
    assert names(table.range("updated", ge=2)) == ["b", "a"]
    table.remove(2)
    assert names(table.range("updated", ge=2)) == ["a"]
    assert names(table.range("updated", ge=2, deleted="with")) == ["b", "a"]


@pytest.mark.parametrize("order", ["key", "insertion"])
def test_orderings_kept_through_writes_match_a_fresh_sort(order: str) -> None:
    """The orderings `range` bisects are kept up to date write by write rather than rebuilt:
    after any mix of inserts, changes, soft and hard deletes, re-inserts of a purged key and
    restamps, every range answers what sorting the table afresh (ties in table order) gives."""
    rng = Random(11)
    table = Table("code", ids=None, order=order, deleted_field="deleted")  # type: ignore[arg-type]
    days = [None, *(f"2025-01-{d:02d}" for d in range(1, 9))]
    codes = [f"K{n:03d}" for n in range(60)]

    def fresh(bounds: dict[str, str], deleted: str) -> list[str]:
        rows = [r for r in table.rows(deleted=deleted)]  # type: ignore[arg-type]
        rows.sort(key=lambda r: (r["updated"] is not None, r["updated"] or ""))
        if bounds:
            rows = [r for r in rows if r["updated"] is not None
                    and ("ge" not in bounds or r["updated"] >= bounds["ge"])
                    and ("lt" not in bounds or r["updated"] < bounds["lt"])]
        return [r["code"] for r in rows]

    for step in range(1500):
        code, roll = rng.choice(codes), rng.random()
        row = table.get(code, deleted="with")
        if row is None or roll < 0.4:
            table.put({"code": code, "updated": rng.choice(days)})
        elif roll < 0.6:
            row["updated"] = rng.choice(days)  # changed in place, then stored again
            table.put(row)
        elif roll < 0.7:
            table.remove(code)
        elif roll < 0.8:
            table.purge(code)
        else:
            table.touch(code)
        if step % 25 == 0:
            low, high = sorted(rng.sample(days[1:], 2))
            for bounds in ({}, {"ge": low}, {"ge": low, "lt": high}):
                for deleted in ("hide", "with"):
                    ranged = table.range("updated", deleted=deleted, **bounds)  # type: ignore[arg-type]
                    answered = [r["code"] for r in ranged]
                    assert answered == fresh(bounds, deleted), (step, bounds, deleted)


def test_the_kit_names_no_vendor() -> None:
    text = Path(store.__file__).read_text().lower()
    for vendor in ("acumatica", "epicor", "procore", "servicenow", "servicetitan", "syspro"):
        assert vendor not in text
