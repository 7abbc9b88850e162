"""Hot statements compiled once for SQLite and run straight on ``sqlite3``: ``Prebuilt``.

The embedded crawl's frontier runs a handful of statements per batch of pages. Through SQLAlchemy each costs
some 20 µs of its execution layer (an execution context, parameter processing, a cursor result, events) on
top of SQLite's few microseconds: an eighth of the embedded crawl's CPU in ``bench/profile_crawl.py``. A
``Prebuilt`` statement is still written once, in SQLAlchemy Core, for every database; on SQLite it is compiled
once to SQL text with named parameters and executed with the standard library's ``sqlite3`` on the connection's
own DBAPI connection, inside the transaction SQLAlchemy opened there; on PostgreSQL it is the plain Core
statement through ``AsyncConnection.execute``.

What the compiled text needs that SQLAlchemy does per execution:
- expanding parameters (``IN (…)`` of a list, whose length changes per call and would need a compilation per
  length) are sent as ONE JSON array and read by ``json_each``: ``x IN (SELECT value FROM json_each(:p))``; a
  list of tuples becomes ``(a, b) IN (SELECT json_extract(value, '$[0]'), … FROM json_each(:p))``.
- the types' bind processors (datetimes as SQLite's text, JSON documents, booleans) run on the values given, and
  their result processors on the rows read; rows are named tuples (``row.url``, ``row[0]``).
- the statement runs in SQLAlchemy's transaction on that connection: one is begun first when none is (as
  SQLAlchemy's autobegin does), so that what it writes is committed by the caller's ``commit`` or the end of its
  ``begin()`` block, never rolled back silently when the connection goes back to the pool.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError, InvalidRequestError, MultipleResultsFound, NoResultFound

from kubecrawl.store.sqlite_engine import SqliteConnection

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.sql import Executable

    from kubecrawl.store.engines import Parameters, SqlConnection

_POSTCOMPILE = re.compile(r"\(__\[POSTCOMPILE_(\w+)\]\)")
Processor = Callable[[Any], Any]


class Rows:
    """The rows a prebuilt statement read, with the part of ``CursorResult``'s interface the stores use."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar_one(self) -> Any:
        if not self._rows:  # as CursorResult.scalar_one raises
            raise NoResultFound("No row was found when one was required")
        if len(self._rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self._rows[0][0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


def _json_each(name: str, widths: Mapping[str, int]) -> str:
    """The subquery an expanding parameter becomes: its JSON array's items (or, for tuples, their columns)."""
    width = widths[name]
    if not width:
        return f"(SELECT value FROM json_each(:{name}))"  # noqa: S608 (a bind parameter's name, from the compiler)
    columns = ", ".join(f"json_extract(value, '$[{index}]')" for index in range(width))
    return f"(SELECT {columns} FROM json_each(:{name}))"  # noqa: S608 (as above)


class _Compiled:
    """One statement's SQLite text, the parameters' defaults and processors, and the result rows' shape."""

    __slots__ = ("defaults", "expanding", "processors", "required", "row", "row_processors", "sql")

    def __init__(self, statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> None:
        # Compiled with named parameters (``:name``, which sqlite3 takes from a dict) rather than the dialect's ``?``,
        # and, as SQLAlchemy compiles an INSERT or UPDATE, for the columns the parameters name (an INSERT compiled
        # without them would write NULL into every other column instead of its server default).
        named = type(dialect)(paramstyle="named")  # type: ignore[call-arg]
        compiled = statement.compile(dialect=named, column_keys=list(keys))  # type: ignore[attr-defined]
        if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
            raise ValueError("prebuilt: a column with a Python-side default; give its value instead")
        widths = {
            compiled.bind_names[bind]: len(getattr(bind.type, "types", ())) for bind in compiled.post_compile_params
        }
        self.sql: str = _POSTCOMPILE.sub(lambda match: _json_each(match.group(1), widths), compiled.string)
        if "__[POSTCOMPILE_" in self.sql:  # rendered at execution by SQLAlchemy some other way (a literal_execute)
            raise ValueError(f"prebuilt: a parameter this module does not render: {self.sql}")
        self.expanding = frozenset(widths)
        self.defaults: dict[str, Any] = dict(compiled.params)
        # parameters without a value of their own: each call (each row of an executemany) must give them
        self.required = frozenset(name for bind, name in compiled.bind_names.items() if bind.required)
        for name in self.expanding:  # a literal list (``IN ('A', 'B')``): its JSON once
            if self.defaults.get(name) is not None:
                self.defaults[name] = json.dumps(list(self.defaults[name]))
        self.processors: dict[str, Processor] = {}
        for name, processor in compiled._bind_processors.items():  # noqa: SLF001 (SQLAlchemy's per-bind processors)
            if name not in self.expanding:
                self.processors[name] = processor
            elif any(processor) if isinstance(processor, tuple) else processor is not None:
                raise ValueError(f"prebuilt: the list parameter {name!r} needs a bind processor")
        columns = compiled._result_columns  # noqa: SLF001 (the RETURNING or SELECT columns, with their types)
        self.row: type[tuple[Any, ...]] | None = (
            namedtuple("Row", [column.keyname for column in columns], rename=True) if columns else None  # noqa: PYI024
        )
        self.row_processors = [
            (index, processor)
            for index, column in enumerate(columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        ]

    def bind(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        missing = self.required.difference(parameters)
        if missing:  # as SQLAlchemy refuses it, rather than sending NULL
            raise InvalidRequestError(f"A value is required for bind parameter {min(missing)!r}")
        values = self.defaults | dict(parameters)
        for name in self.expanding:
            value = parameters.get(name)
            if value is not None:
                values[name] = json.dumps([list(item) if isinstance(item, tuple) else item for item in value])
        for name, processor in self.processors.items():
            values[name] = processor(values[name])
        return values

    def rows(self, fetched: list[Any]) -> list[Any]:
        assert self.row is not None
        make = self.row._make  # type: ignore[attr-defined]
        if not self.row_processors:
            return [make(row) for row in fetched]
        result = []
        for raw in fetched:
            row = list(raw)
            for index, processor in self.row_processors:
                row[index] = processor(row[index])
            result.append(make(row))
        return result


class Prebuilt:
    """A Core statement, compiled once per process for SQLite and run on ``sqlite3`` there (module docstring)."""

    __slots__ = ("_sqlite", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        # compiled per set of parameter names (one or two per statement in practice)
        self._sqlite: dict[tuple[str, ...], _Compiled] = {}

    async def execute(self, conn: SqlConnection, parameters: Parameters | None = None) -> Any:
        """Rows (``all``, ``first``, ``scalar_one``, ``scalars``, iteration) of the statement with ``parameters``
        (a mapping, or a sequence of them for an executemany)."""
        if not isinstance(conn, SqliteConnection):
            return await conn.execute(self.statement, parameters)
        return self.run(conn, parameters or {})

    def run(self, conn: SqliteConnection, parameters: Parameters) -> Rows:
        """On SQLite, at once: the statement on the DBAPI connection, in SQLAlchemy's transaction there."""
        sync = conn.sync_connection
        first = parameters if isinstance(parameters, Mapping) else (parameters[0] if parameters else {})
        keys = tuple(first)
        compiled = self._sqlite.get(keys)
        if compiled is None:
            compiled = self._sqlite[keys] = _Compiled(self.statement, sync.dialect, keys)
        if not sync.in_transaction():
            sync.begin()  # SQLAlchemy's autobegin: committed by the caller, or rolled back at close
        cursor = sync.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            if isinstance(parameters, Mapping):
                cursor.execute(compiled.sql, compiled.bind(parameters))
            else:
                cursor.executemany(compiled.sql, [compiled.bind(row) for row in parameters])
            rows = compiled.rows(cursor.fetchall()) if compiled.row is not None else []
            return Rows(rows, cursor.rowcount)
        except sqlite3.Error as exc:  # as SQLAlchemy raises it: IntegrityError, OperationalError, … (store/database.py)
            raise DBAPIError.instance(compiled.sql, parameters, exc, sqlite3.Error) from exc
        finally:
            cursor.close()
