"""Listing runs by id prefix on the SQL store: a range of the primary key, exact on every database.

The runs whose id starts with ``p`` are the keys from ``p`` (included) to
:func:`upper_bound` of ``p`` (excluded) in code point order, a range the primary
key's index reads directly. ``LIKE 'p%'`` would need ``%``, ``_`` and the escape
character escaped, and PostgreSQL serves it from a B-tree only under the ``C``
collation.

The range is exact where the key's order is code point order:

* SQLite compares text with its ``BINARY`` collation, byte for byte in UTF-8;
* MySQL and MariaDB hold ids as ``VARBINARY`` (see ``_schema``), bytes again;
* PostgreSQL orders by the column's collation. ``C``, ``POSIX``, ``C.UTF-8`` and
  the builtin provider's collations order by code point. A linguistic collation
  (``en_US.UTF-8``, ICU) does not keep the strings of one prefix together (under
  ICU ``"run:"`` sorts before ``"run9"``, so ``"run95"`` is outside the range of
  ``"run9"``), so there the range is compared under ``COLLATE "C"``: exact, but
  not served by the key's index. :class:`IdRanges` asks the database once which
  case holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

    from fluxo.stores.sql import _database

_SURROGATES: Final = range(0xD800, 0xE000)
_CODE_POINT_LOCALES: Final = frozenset({"c", "posix", "c.utf8", "c.utf-8"})
"""libc locales (lower case) whose collation is code point order."""
_CODE_POINT_COLLATIONS: Final = frozenset({"C", "POSIX", "ucs_basic", "pg_c_utf8"})

_PG_COLLATION: Final = """
SELECT co.collname, co.collprovider, to_jsonb(co) ->> 'collcollate',
       d.datcollate, to_jsonb(d) ->> 'datlocprovider'
FROM pg_attribute a
JOIN pg_collation co ON co.oid = a.attcollation
JOIN pg_database d ON d.datname = current_database()
WHERE a.attrelid = to_regclass('fluxo_runs') AND a.attname = 'id'
"""
"""The collation of ``fluxo_runs.id`` and the database's (columns by name through
``to_jsonb``, since ``collcollate`` and ``datlocprovider`` are not on every version)."""


def upper_bound(prefix: str) -> str | None:
    """The least string after every string that starts with ``prefix``, in code point order.

    The last character that is not U+10FFFF goes up by one, skipping the surrogates
    (no id holds one), and what follows it is dropped. ``None`` when there is no
    such string (``prefix`` is empty or all U+10FFFF): every string from ``prefix``
    on starts with it.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code in _SURROGATES:
            code = _SURROGATES.stop
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def orders_by_code_point(
    name: str,
    provider: str,
    locale: str | None,
    database_locale: str,
    database_provider: str | None,
) -> bool:
    """Tell whether a PostgreSQL column's collation sorts by code point (a row of the query)."""
    if name != "default":
        if name in _CODE_POINT_COLLATIONS or provider == "b":
            return True
        return provider == "c" and (locale or "").lower() in _CODE_POINT_LOCALES
    if database_provider == "b":  # the builtin provider's locales are all code point order
        return True
    return database_provider in (None, "c") and database_locale.lower() in _CODE_POINT_LOCALES


def id_range(
    column: sa.Column[Any], *, upper: bool, bytewise: bool
) -> list[sa.ColumnElement[bool]]:
    """``column >= :p_id_low`` and, with ``upper``, ``column < :p_id_high``.

    ``bytewise`` compares under ``COLLATE "C"`` (PostgreSQL under a linguistic collation).
    """
    key: sa.ColumnElement[Any] = column.collate("C") if bytewise else column
    bounds = [key >= sa.bindparam("p_id_low", type_=column.type)]
    if upper:
        bounds.append(key < sa.bindparam("p_id_high", type_=column.type))
    return bounds


class IdRanges:
    """The id-prefix ranges of one database: the bound values and the statement's shape.

    Args:
        db: the store's database.
    """

    def __init__(self, db: _database.Database) -> None:
        self._db = db
        self._bytewise: bool | None = None if db.driver.name == "postgresql" else False

    def bind(self, prefix: str, values: dict[str, Any]) -> tuple[bool, bool]:
        """Put the range of ``prefix`` into ``values``; return its shape ``(upper, bytewise)``."""
        values["p_id_low"] = prefix
        high = upper_bound(prefix)
        if high is not None:
            values["p_id_high"] = high
        return high is not None, self._needs_bytewise()

    def _needs_bytewise(self) -> bool:
        if self._bytewise is None:

            def read(cur: DBAPICursor) -> Any:
                cur.execute(_PG_COLLATION)
                return cur.fetchone()

            row = self._db.call("reading the collation of the run ids", read)
            self._bytewise = row is None or not orders_by_code_point(*row)
        return self._bytewise
