"""What a claim writes: the lease, and a recovery when it takes a run over.

``claim`` and ``claim_run`` make a run ``running`` and lease it. A run still
``running`` when claimed is taken over from an execution that never ended (its
lease ran out, or ``beat_worker`` ended it), and the same statement counts a
recovery in ``recoveries``; a worker taking back its own lease does not.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fluxo import history
from fluxo.stores.sql import _schema as schema

_R = schema.runs
_RUNNING = history.RunStatus.RUNNING.value


def _p(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


def lease_values(
    taking_back: sa.BindParameter[str] | None = None,
) -> list[tuple[sa.Column[Any], Any]]:
    """What a claim sets, in order, for ``ordered_values``.

    ``recoveries`` comes first: it reads the status as it was, and MySQL evaluates
    SET left to right. ``taking_back`` is ``claim_run``'s worker, whose own run
    (still ``running`` under its name) is no recovery.
    """
    running = sa.literal_column(f"'{_RUNNING}'", sa.String())
    recovered = _R.c.status == running
    if taking_back is not None:
        recovered = sa.and_(
            recovered,
            sa.or_(_R.c.lease_owner.is_(None), _R.c.lease_owner != taking_back),
        )
    return [
        (_R.c.recoveries, sa.case((recovered, _R.c.recoveries + 1), else_=_R.c.recoveries)),
        (_R.c.status, running),
        (_R.c.lease_owner, _p("p_worker", _R.c.lease_owner)),
        (_R.c.lease_until, _p("p_lease_until", _R.c.lease_until)),
        (_R.c.updated_at, _p("p_now", _R.c.updated_at)),
        (_R.c.wake_requested, sa.false()),
    ]
