"""One in-memory table store for every sandbox: rows as dicts, found by key, index or stamp.

Usage::

    stamps = Stamps()                                   # one per database if stamps are shared
    vendors = Table(("VendorNum",), ids=1, indexed=("VendorID",), stamps=stamps,
                    stamp_field="SysRevID")             # the stamp is mirrored into the row
    lines = Table(("PONum", "POLine"), parent=("PONum",), stamps=stamps)
    row = vendors.put({"VendorID": "ACME01", "Name": "Acme"})   # VendorNum 1 drawn, stamped
    vendors.get(1); vendors.one("VendorID", "acme01")           # keys and indexes ignore case
    lines.children(7)                                           # PO 7's lines in key order
    vendors.changed_since(last_seen)                            # rows stamped after last_seen
    vendors.cached(("filter", text), lambda: [...])             # recomputed after any write

Each vendor's database keys, indexes and change-tracks its records differently, but the
machinery underneath is always the same few pieces: a primary key compared under some
collation, equality indexes, rows grouped under a parent, a monotonic stamp per write that
feeds and optimistic concurrency are built on, and caches that a write must invalidate. They
are written and tested once here; field names, stamp meanings, and what a deletion looks like
stay with the sandbox, which passes them in.

A table is not locked: every sandbox already serialises writes under its own lock. `Stamps`
is, because one may be shared by tables written from different request threads.
"""

from __future__ import annotations

import bisect
import collections
import secrets
import threading
from random import Random
from typing import Any, Callable, Hashable, Iterator, Literal, TypeVar

Row = dict[str, Any]
Key = tuple[Any, ...]
Deleted = Literal["hide", "with", "only"]
T = TypeVar("T")

# ---- collations ------------------------------------------------------------------------------


def casefold(value: Any) -> Any:
    """Strings compared without case (the default: most ERP databases collate that way)."""
    return value.casefold() if isinstance(value, str) else value


def collated(value: Any) -> Any:
    """SQL Server's default collation: no case, and trailing blanks do not count."""
    return value.rstrip().casefold() if isinstance(value, str) else value


def exact(value: Any) -> Any:
    """Values compared as stored (generated ids, case-sensitive systems)."""
    return value


# ---- id and stamp sources --------------------------------------------------------------------


def hex_ids(rng: Random | None = None) -> Callable[[], str]:
    """A source of 32-hex-digit ids: from `rng` when seeding must be repeatable, else random."""
    if rng is None:
        return lambda: secrets.token_hex(16)
    return lambda: f"{rng.getrandbits(128):032x}"


class Stamps:
    """A change counter that only goes up, shareable by the tables of one database.

    A stamp is what clients page by ("changed after N") and what optimistic concurrency
    compares, so it is never reused: clearing a table does not rewind it.
    """

    def __init__(self, start: int = 0) -> None:
        self._last = start
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        """The newest stamp handed out (the start value if none yet)."""
        return self._last

    def next(self) -> int:
        with self._lock:
            self._last += 1
            return self._last

    def advance_to(self, value: int) -> None:
        """Make the next stamp greater than `value` (after loading rows stamped elsewhere)."""
        with self._lock:
            self._last = max(self._last, value)


class DuplicateKey(KeyError):
    """`add` of a row whose key is already stored (a soft-deleted row still holds its key)."""


def _sortable(value: Any) -> tuple[bool, Any]:
    """None sorts before every value, so a column with gaps can still be ordered and bisected."""
    return (value is not None, value)


Entry = tuple[tuple[bool, Any], Any, Key]  # a row's place in a field's ordering: value, table position, key


def _value(entry: Entry) -> tuple[bool, Any]:
    return entry[0]


# ---- the table -------------------------------------------------------------------------------


class Table:
    """Rows of one record type, keyed, indexed, optionally grouped under a parent, stamped.

    `key`: the fields that identify a row, compared through `normalise`.
    `ids`: generate the id when a row arrives without one: an int is the first of a counter
        (an explicit larger id moves the counter past it), a callable returns a fresh id.
        `id_field` names the field (default: the key, when the key is one field); an id field
        outside the key is indexed, so `one(id_field, value)` finds rows by it.
    `indexed`: fields with an equality index (others get one on first `lookup`).
    `parent`: fields naming a row's parent; `children(*parent)` lists its rows in table order.
    `stamps`: the stamp source, shared across tables when the database has one counter.
    `stamp_field`: also write each row's stamp into the row under this name.
    `order`: "key" lists rows in key order; "insertion" in the order they were first stored.
    `deleted_field`: soft delete: `remove` sets this field and the row stays, hidden.
    `cache_size`: how many `cached` results to keep.
    """

    def __init__(self, key: str | tuple[str, ...], *, normalise: Callable[[Any], Any] = casefold,
                 ids: int | Callable[[], Any] | None = None, id_field: str | None = None,
                 indexed: tuple[str, ...] = (), parent: tuple[str, ...] = (), stamps: Stamps | None = None,
                 stamp_field: str | None = None, order: Literal["key", "insertion"] = "key",
                 deleted_field: str | None = None, cache_size: int = 64, name: str = "") -> None:
        self.name = name
        self.key = (key,) if isinstance(key, str) else tuple(key)
        if not self.key:
            raise ValueError("a table needs at least one key field")
        self.normalise = normalise
        self.id_field = id_field or (self.key[0] if ids is not None and len(self.key) == 1 else None)
        if ids is not None and self.id_field is None:
            raise ValueError("generated ids need id_field when the key has several fields")
        self._ids = ids
        self.parent = tuple(parent)
        self.stamps = stamps or Stamps()
        self.stamp_field = stamp_field
        self.order = order
        self.deleted_field = deleted_field
        self.cache_size = cache_size
        extra = (self.id_field,) if self.id_field and self.key != (self.id_field,) else ()
        self._declared = tuple(dict.fromkeys((*indexed, *extra)))
        self.version = 0
        self.last_stamp = 0  # the newest stamp this table used; a feed at its end is here
        self._cache: collections.OrderedDict[Hashable, tuple[int, Any]] = collections.OrderedDict()
        self.clear()

    # -- state ------------------------------------------------------------------------------

    def clear(self) -> None:
        """Drop every row and restart the id counter; the version and stamps keep rising."""
        self._rows: dict[Key, Row] = {}
        self._index: dict[str, dict[Any, set[Key]]] = {f: {} for f in self._declared}
        self._marks: dict[Key, dict[str, Any]] = {}  # index values as recorded, for unindexing
        self._parent_of: dict[Key, Key] = {}
        self._children: dict[Key, set[Key]] = {}
        self._stamp: dict[Key, int] = {}
        self._log: list[tuple[int, Key]] = []  # (stamp, key) as written; stale entries skipped
        self._log_sorted = True
        self._key_order: list[Key] | None = None
        self._position: dict[Key, int] | None = None
        self._listed: dict[str, list[Row]] = {}
        self._orderings: dict[str, list[Entry]] = {}  # per field: (value, table position, key), sorted
        self._entry: dict[str, dict[Key, Entry]] = {}  # per field: each row's entry in that list
        self._seq: dict[Key, int] = {}  # when each key was first stored (table order of "insertion")
        self._next_seq = 0
        self._next_id = self._ids if isinstance(self._ids, int) else 0
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._listed.clear()

    # -- keys and ids -----------------------------------------------------------------------

    def key_of(self, row: Row) -> Key:
        return tuple(self.normalise(row.get(name)) for name in self.key)

    def _key(self, values: tuple[Any, ...]) -> Key:
        if len(values) != len(self.key):
            raise TypeError(f"key of {self.name or 'table'} has {len(self.key)} fields, got {len(values)}")
        return tuple(self.normalise(v) for v in values)

    def new_id(self) -> Any:
        """Reserve the next generated id (for a row built before it is stored)."""
        if isinstance(self._ids, int):
            value = self._next_id
            self._next_id += 1
            return value
        if self._ids is None:
            raise TypeError("this table does not generate ids")
        while True:  # a random id can collide; a drawn one is checked against what is stored
            value = self._ids()
            if not self._id_taken(value):
                return value

    def _id_taken(self, value: Any) -> bool:
        assert self.id_field is not None
        if self.key == (self.id_field,):
            return (self.normalise(value),) in self._rows
        return bool(self._index[self.id_field].get(self.normalise(value)))

    # -- writes -----------------------------------------------------------------------------

    def put(self, row: Row) -> Row:
        """Store `row` (insert or replace the row with its key), stamp it, bump the version.

        A row changed in place and put again is unindexed by the values recorded when it was
        last stored, so indexes stay right even though the old values are gone from the dict.
        Changing a key field means a different row: remove the old one first.
        """
        self._give_id(row)
        if any(row.get(name) is None for name in self.key):
            raise ValueError(f"row lacks key field(s) {[n for n in self.key if row.get(n) is None]}")
        key = self.key_of(row)
        if key in self._rows:
            self._unrecord(key)
        else:
            self._seq[key] = self._next_seq
            self._next_seq += 1
            if self._key_order is not None:
                if self.order == "key":
                    bisect.insort(self._key_order, key)
                else:
                    self._key_order.append(key)
                self._position = None
        self._rows[key] = row
        self._record(key, row)
        self._stamp_row(key, row)
        return row

    def _give_id(self, row: Row) -> None:
        if self.id_field is None or self._ids is None:
            return
        given = row.get(self.id_field)
        if given in (None, ""):
            row[self.id_field] = self.new_id()
        elif isinstance(self._ids, int) and isinstance(given, int):
            self._next_id = max(self._next_id, given + 1)  # a loaded id is never drawn again

    def add(self, row: Row) -> Row:
        """`put` for a row that must be new; `DuplicateKey` if its key is taken."""
        self._give_id(row)
        if self.key_of(row) in self._rows:
            raise DuplicateKey(self.key_of(row))
        return self.put(row)

    def touch(self, *key: Any) -> None:
        """With a key: restamp that row (a child's change counts as its parent's). Without:
        bump the version only, for a change the table cannot see (related data moved)."""
        if not key:
            self._orderings.clear()  # values may have moved where no write shows it
            self._entry.clear()
            self._changed()
            return
        k = self._key(key)
        row = self._rows.get(k)
        if row is None:
            raise KeyError(key)
        self._stamp_row(k, row)

    def remove(self, *key: Any, mark: Any = True) -> Row | None:
        """Delete the row: soft (set `deleted_field` to `mark`, e.g. the deletion time, and
        stamp it, so feeds report it) when the table keeps deleted rows, else for good."""
        if self.deleted_field is None:
            return self.purge(*key)
        k = self._key(key)
        row = self._rows.get(k)
        if row is None:
            return None
        row[self.deleted_field] = mark
        self._stamp_row(k, row)
        return row

    def purge(self, *key: Any) -> Row | None:
        """Remove the row for good, soft delete or not; gone from feeds too."""
        k = self._key(key)
        row = self._rows.pop(k, None)
        if row is None:
            return None
        self._unrecord(k)
        self._stamp.pop(k, None)
        for field, entries in self._orderings.items():
            self._drop_entry(entries, self._entry[field].pop(k))
        self._seq.pop(k, None)
        if self._key_order is not None:
            at = bisect.bisect_left(self._key_order, k) if self.order == "key" else self._key_order.index(k)
            del self._key_order[at]
            self._position = None
        self._changed()
        return row

    def _record(self, key: Key, row: Row) -> None:
        marks = {name: self.normalise(row.get(name)) for name in self._index}
        for name, value in marks.items():
            self._index[name].setdefault(value, set()).add(key)
        self._marks[key] = marks
        if self.parent:
            parent = tuple(self.normalise(row.get(name)) for name in self.parent)
            self._parent_of[key] = parent
            self._children.setdefault(parent, set()).add(key)

    def _unrecord(self, key: Key) -> None:
        for name, value in self._marks.pop(key, {}).items():
            bucket = self._index[name].get(value)
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._index[name][value]
        parent = self._parent_of.pop(key, None)
        if parent is not None:
            siblings = self._children.get(parent)
            if siblings is not None:
                siblings.discard(key)
                if not siblings:
                    del self._children[parent]

    def _stamp_row(self, key: Key, row: Row) -> None:
        for field, entries in self._orderings.items():  # kept in order, not rebuilt per write
            entry = (_sortable(row.get(field)), self._position_of(key), key)
            old = self._entry[field].get(key)
            if old != entry:
                if old is not None:
                    self._drop_entry(entries, old)
                bisect.insort(entries, entry)
                self._entry[field][key] = entry
        stamp = self.stamps.next()
        self._stamp[key] = stamp
        if self.stamp_field is not None:
            row[self.stamp_field] = stamp
        if self._log and stamp < self._log[-1][0]:
            self._log_sorted = False  # another thread's write took a stamp first and came in later
        self._log.append((stamp, key))
        self.last_stamp = max(self.last_stamp, stamp)
        if len(self._log) > 2 * len(self._rows) + 256:
            self._log = sorted((s, k) for k, s in self._stamp.items())
            self._log_sorted = True
        self._changed()

    # -- reads ------------------------------------------------------------------------------

    def is_deleted(self, row: Row) -> bool:
        return self.deleted_field is not None and row.get(self.deleted_field) not in (None, False)

    def _visible(self, row: Row, deleted: Deleted) -> bool:
        if deleted == "with":
            return True
        return self.is_deleted(row) == (deleted == "only")

    def get(self, *key: Any, deleted: Deleted = "hide") -> Row | None:
        row = self._rows.get(self._key(key))
        return row if row is not None and self._visible(row, deleted) else None

    def __contains__(self, key: Any) -> bool:
        """Whether a key (a tuple, or one value) is stored at all, soft-deleted rows included."""
        values = key if isinstance(key, tuple) else (key,)
        return self._key(values) in self._rows

    def __len__(self) -> int:
        """Rows a reader sees (soft-deleted ones not counted)."""
        return len(self.rows())

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows())

    def _keys_in_order(self) -> list[Key]:
        if self._key_order is None:
            self._key_order = sorted(self._rows) if self.order == "key" else list(self._rows)
            self._position = None
        return self._key_order

    def _positions(self) -> dict[Key, int]:
        if self._position is None:
            self._position = {k: i for i, k in enumerate(self._keys_in_order())}
        return self._position

    def _in_order(self, keys: set[Key] | list[Key]) -> list[Key]:
        if self.order == "key":
            return sorted(keys)
        position = self._positions()
        return sorted(keys, key=position.__getitem__)

    def rows(self, deleted: Deleted = "hide") -> list[Row]:
        """Rows in table order; the list is cached until the next write (do not change it)."""
        listed = self._listed.get(deleted)
        if listed is None:
            rows = (self._rows[k] for k in self._keys_in_order())
            listed = self._listed[deleted] = [r for r in rows if self._visible(r, deleted)]
        return listed

    def lookup(self, field: str, value: Any, deleted: Deleted = "hide") -> list[Row]:
        """Rows whose `field` equals `value` (both normalised), in table order. A field not
        declared gets its index now and keeps it, so a repeated question is cheap."""
        index = self._index.get(field)
        if index is None:
            index = self._index[field] = {}
            for key, row in self._rows.items():
                value_now = self.normalise(row.get(field))
                index.setdefault(value_now, set()).add(key)
                self._marks[key][field] = value_now
        keys = index.get(self.normalise(value))
        if not keys:
            return []
        return [row for row in (self._rows[k] for k in self._in_order(keys)) if self._visible(row, deleted)]

    def one(self, field: str, value: Any, deleted: Deleted = "hide") -> Row | None:
        """The first row (in table order) whose `field` equals `value`, else None."""
        found = self.lookup(field, value, deleted)
        return found[0] if found else None

    def children(self, *parent: Any, deleted: Deleted = "hide") -> list[Row]:
        """The rows under one parent, in table order (a document's lines by line number)."""
        if not self.parent:
            raise TypeError("this table has no parent fields")
        if len(parent) != len(self.parent):
            raise TypeError(f"parent has {len(self.parent)} fields, got {len(parent)}")
        keys = self._children.get(tuple(self.normalise(p) for p in parent))
        if not keys:
            return []
        return [row for row in (self._rows[k] for k in self._in_order(keys)) if self._visible(row, deleted)]

    # -- stamps -----------------------------------------------------------------------------

    def stamp_of(self, row: Row) -> int:
        """The stamp of a stored row's last write."""
        return self._stamp[self.key_of(row)]

    def changed_since(self, stamp: int, *, inclusive: bool = False, limit: int | None = None,
                      deleted: Deleted = "with") -> list[Row]:
        """Rows last written after `stamp` (at or after it if `inclusive`), oldest change first.

        Found by bisecting the write log, so a feed read costs its answer, not the table.
        Soft-deleted rows are included by default: a change feed must report deletions.
        Ask for `limit + 1` to learn whether more follow; a reader that got everything may
        continue from `last_stamp`.
        """
        if not self._log_sorted:
            self._log.sort()
            self._log_sorted = True
        log = self._log
        probe = (stamp,)
        start = bisect.bisect_left(log, probe) if inclusive else bisect.bisect_left(log, (stamp + 1,))
        found: list[Row] = []
        for at in range(start, len(log)):
            entry_stamp, key = log[at]
            if self._stamp.get(key) != entry_stamp:
                continue  # the row was written again later (or purged): a newer entry stands
            row = self._rows[key]
            if not self._visible(row, deleted):
                continue
            found.append(row)
            if limit is not None and len(found) >= limit:
                break
        return found

    # -- orderings on other fields ----------------------------------------------------------

    def _position_of(self, key: Key) -> Any:
        """What orders ties: the key itself in a key-ordered table, else when it was first stored."""
        return key if self.order == "key" else self._seq[key]

    @staticmethod
    def _drop_entry(entries: list[Entry], entry: Entry) -> None:
        del entries[bisect.bisect_left(entries, entry)]

    def _ordering(self, field: str) -> list[Entry]:
        """Every row's (value, table position, key) for `field`, sorted: built on first use, then
        kept up to date by each write (a write-then-page on a large table moves one entry)."""
        entries = self._orderings.get(field)
        if entries is None:
            self._entry[field] = {k: (_sortable(row.get(field)), self._position_of(k), k)
                                  for k, row in self._rows.items()}
            entries = self._orderings[field] = sorted(self._entry[field].values())
        return entries

    def ordered_by(self, field: str, deleted: Deleted = "hide") -> list[Row]:
        """Rows by `field` ascending (None first, ties in table order): a time column's order."""
        return self.range(field, deleted=deleted)

    def range(self, field: str, *, gt: Any = None, ge: Any = None, lt: Any = None, le: Any = None,
              deleted: Deleted = "hide") -> list[Row]:
        """Rows whose `field` lies within the given bounds, ordered by it; bounds compare raw
        values (not normalised). The ordering is built on first use, kept up to date by each
        write and bisected, so paging a time window after a write sorts nothing."""
        entries = self._ordering(field)
        low, high = 0, len(entries)
        if ge is not None:
            low = max(low, bisect.bisect_left(entries, _sortable(ge), key=_value))
        if gt is not None:
            low = max(low, bisect.bisect_right(entries, _sortable(gt), key=_value))
        if le is not None:
            high = min(high, bisect.bisect_right(entries, _sortable(le), key=_value))
        if lt is not None:
            high = min(high, bisect.bisect_left(entries, _sortable(lt), key=_value))
        if any(bound is not None for bound in (gt, ge, lt, le)):
            low = max(low, bisect.bisect_left(entries, (True,), key=_value))  # a bounded range never holds None
        rows = (self._rows[entry[2]] for entry in entries[low:high])
        return [row for row in rows if self._visible(row, deleted)]

    # -- cached answers ---------------------------------------------------------------------

    def cached(self, text: Hashable, compute: Callable[[], T]) -> T:
        """`compute()`'s answer for `text`, kept until the table's next write: paging one
        filter re-asks the same question, and the answer is the same until a row changes."""
        hit = self._cache.get(text)
        if hit is not None and hit[0] == self.version:
            self._cache.move_to_end(text)
            return hit[1]  # type: ignore[no-any-return]
        value = compute()
        self._cache[text] = (self.version, value)
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value
