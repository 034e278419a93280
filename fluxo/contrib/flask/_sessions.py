"""Whether a SQLAlchemy session's transaction has written: the rule for an ambient start.

Flask-SQLAlchemy's ``db.session`` opens a transaction at its first query, and a
view that only reads never commits it: the session is removed (rolled back) at
the end of the request. A start that joined such a transaction would vanish
with it. So an ambient start (``engine.start`` inside a ``db.session``
transaction) joins, or waits for the commit, only when the transaction has
written: it holds objects not yet flushed (added, changed or deleted), or
something was flushed in it, or it ran an INSERT, UPDATE or DELETE (or a SQL
text other than a SELECT) through ``session.execute``. A transaction that only
read gets a plain start, committed at once.

The flushes and statements are heard through session events, listened to on
SQLAlchemy's ``Session`` class, so they cover every session, whenever it was
made; each marks ``session.info``, and the mark goes when the session's
outermost transaction ends (commit or rollback).
"""

from __future__ import annotations

import threading
from typing import Any, Final

from sqlalchemy import event, orm
from sqlalchemy.sql import elements

WROTE: Final = "fluxo.wrote"
"""The ``session.info`` key set while the session's transaction has written."""

_READ_KEYWORDS: Final = ("select", "show", "explain", "pragma", "values")
"""The first words of SQL texts taken as reads."""

_listening = False
_listening_lock = threading.Lock()


def listen() -> None:
    """Listen, once per process, for what marks a session's transaction as written."""
    global _listening  # noqa: PLW0603 (one set of listeners for the process)
    with _listening_lock:
        if _listening:
            return
        event.listen(orm.Session, "after_flush", _flushed)
        event.listen(orm.Session, "do_orm_execute", _executing)
        event.listen(orm.Session, "after_transaction_end", _ended)
        _listening = True


def _flushed(session: orm.Session, _context: Any) -> None:
    session.info[WROTE] = True


def _executing(state: orm.ORMExecuteState) -> None:
    if state.is_select or WROTE in state.session.info:
        return
    if state.is_insert or state.is_update or state.is_delete or _is_write_text(state.statement):
        state.session.info[WROTE] = True


def _is_write_text(statement: Any) -> bool:
    if not isinstance(statement, elements.TextClause):
        return False
    words = statement.text.lstrip(" \t\r\n(").split(None, 1)
    return not words or words[0].lower() not in _READ_KEYWORDS


def _ended(session: orm.Session, transaction: orm.SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost: committed or rolled back
        session.info.pop(WROTE, None)


def has_written(session: orm.Session) -> bool:
    """Whether ``session`` is in a transaction that has written (see the module docstring)."""
    if not session.in_transaction():
        return False
    if session.info.get(WROTE):
        return True
    return bool(session.new or session.deleted or session.dirty)
