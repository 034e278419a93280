"""The ``FLUXO`` setting, read once into a frozen dataclass and checked key by key.

A Django project configures Fluxo with one dictionary in its settings, every key
optional::

    FLUXO = {
        "DATABASE": "default",  # the store, and the database whose transactions starts join
        "STORE": "redis://localhost/0",  # another store instead (any Fluxo store URL)
        "WORKFLOWS": ["shop.flows.checkout"],  # workflows autodiscovery does not find
        "AUTODISCOVER": True,  # import workflows.py of every installed app
        "START": "transaction",  # or "on_commit"
        "DASHBOARD_DECORATOR": "myproject.auth.admins_only",  # guards the dashboard's pages
    }

Anything else, or a value of the wrong kind, is refused with
``ImproperlyConfigured`` naming the key and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from django.core.exceptions import ImproperlyConfigured

from fluxo import _redact

StartMode = Literal["transaction", "on_commit"]

START_MODES: Final[tuple[StartMode, ...]] = ("transaction", "on_commit")
"""The values of ``FLUXO["START"]``."""

KEYS: Final = ("DATABASE", "STORE", "WORKFLOWS", "AUTODISCOVER", "START", "DASHBOARD_DECORATOR")

STAFF_ONLY: Final = "django.contrib.admin.views.decorators.staff_member_required"
"""The default of ``FLUXO["DASHBOARD_DECORATOR"]``: the dashboard is for staff users."""
"""Every key ``FLUXO`` may hold."""


@dataclass(frozen=True, repr=False)
class FluxoSettings:
    """What ``settings.FLUXO`` says, checked; each field has its documented default.

    Attributes:
        database: the alias in ``DATABASES`` of the database Fluxo works with: its
            store (unless ``store`` is set), and the database whose
            ``transaction.atomic()`` blocks starts follow.
        store: a Fluxo store URL (``redis://...``, ``postgresql://...``,
            ``memory://``) to use instead of the Django database.
        workflows: dotted paths of workflows to register besides the ones
            autodiscovery finds.
        autodiscover: whether the ``workflows.py`` module of every installed app is
            imported and its workflows registered.
        start: ``"transaction"``: a start inside ``transaction.atomic()`` is written
            in that transaction (the run exists once it commits, never if it rolls
            back); ``"on_commit"``: the run is created after the commit. ``None``
            (not set): ``"transaction"`` when the store is the Django database,
            ``"on_commit"`` otherwise.
        dashboard_decorator: the dotted path of the view decorator that guards the
            dashboard's pages (``fluxo.contrib.django.dashboard``), by default
            Django admin's ``staff_member_required``; ``None``: none (the project
            guards them otherwise, with a middleware say).
    """

    database: str = "default"
    store: str | None = None
    workflows: tuple[str, ...] = ()
    autodiscover: bool = True
    start: StartMode | None = None
    dashboard_decorator: str | None = STAFF_ONLY

    def __repr__(self) -> str:
        """The settings, with any password in ``store`` masked (tracebacks show this)."""
        store = None if self.store is None else _redact.redact_value(self.store)
        return (
            f"FluxoSettings(database={self.database!r}, store={store!r}, "
            f"workflows={self.workflows!r}, autodiscover={self.autodiscover!r}, "
            f"start={self.start!r}, dashboard_decorator={self.dashboard_decorator!r})"
        )

    @property
    def start_mode(self) -> StartMode:
        """The start mode in force: ``start``, or the automatic choice when it is not set."""
        if self.start is not None:
            return self.start
        return "transaction" if self.store is None else "on_commit"


def read(raw: object) -> FluxoSettings:
    """Check the value of ``settings.FLUXO`` and return it as :class:`FluxoSettings`.

    Args:
        raw: the setting's value; ``None`` (the setting is absent) means every default.

    Raises:
        ImproperlyConfigured: ``raw`` is not a dict, holds an unknown key, or a value
            of the wrong kind; the message names the key and what to write instead.
    """
    if raw is None:
        return FluxoSettings()
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            f"settings.FLUXO must be a dict such as {{'DATABASE': 'default'}}, not "
            f"{type(raw).__name__}"
        )
    unknown = [key for key in raw if key not in KEYS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key).upper(), KEYS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ImproperlyConfigured(
            f"settings.FLUXO has an unknown key {key!r}; {hint}the keys are {', '.join(KEYS)} "
            "(see docs/django.md, 'Settings')"
        )
    found = FluxoSettings(
        database=_database(raw.get("DATABASE", "default")),
        store=_store(raw.get("STORE")),
        workflows=_workflows(raw.get("WORKFLOWS", ())),
        autodiscover=_autodiscover(raw.get("AUTODISCOVER", True)),
        start=_start(raw.get("START")),
        dashboard_decorator=_decorator(raw.get("DASHBOARD_DECORATOR", STAFF_ONLY)),
    )
    if found.store is not None and found.start == "transaction":
        raise ImproperlyConfigured(
            "settings.FLUXO['START'] is 'transaction', but FLUXO['STORE'] puts the runs in "
            "another database than Django's, so a start cannot join Django's transaction; "
            "use 'on_commit' (or leave START out), or leave STORE out to keep the runs in "
            "the Django database"
        )
    return found


def _database(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ImproperlyConfigured(
            f"settings.FLUXO['DATABASE'] must be the alias of a database in DATABASES, such "
            f"as 'default', not {value!r}"
        )
    return value


def _store(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "://" not in value:
        shown = "a URL without a scheme" if isinstance(value, str) else type(value).__name__
        raise ImproperlyConfigured(
            f"settings.FLUXO['STORE'] must be a Fluxo store URL such as 'redis://localhost/0' "
            f"or 'postgresql://user@host/db', not {shown}; leave it out to use the Django "
            "database named by FLUXO['DATABASE']"
        )
    return value


def _workflows(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ImproperlyConfigured(
            "settings.FLUXO['WORKFLOWS'] must be a list of dotted paths such as "
            f"['shop.flows.checkout'], not {value!r}"
        )
    for path in value:
        if not isinstance(path, str) or "." not in path.strip("."):
            raise ImproperlyConfigured(
                f"settings.FLUXO['WORKFLOWS'] holds {path!r}, which is not a dotted path; "
                "write 'module.workflow', such as 'shop.flows.checkout'"
            )
    return tuple(value)


def _autodiscover(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ImproperlyConfigured(
            f"settings.FLUXO['AUTODISCOVER'] must be True or False, not {value!r}"
        )
    return value


def _decorator(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "." not in value.strip("."):
        raise ImproperlyConfigured(
            f"settings.FLUXO['DASHBOARD_DECORATOR'] must be the dotted path of a view "
            f"decorator, such as 'django.contrib.auth.decorators.login_required', or None for "
            f"none, not {value!r}"
        )
    return value


def _start(value: Any) -> StartMode | None:
    if value is None:
        return None
    for mode in START_MODES:
        if value == mode:
            return mode
    raise ImproperlyConfigured(
        f"settings.FLUXO['START'] is {value!r}; use 'transaction' (a start inside "
        "transaction.atomic() joins that transaction) or 'on_commit' (the run is created "
        "after the commit), or leave it out"
    )
