"""A Django database, as the URL of the Fluxo store on it.

Django describes a database with a ``settings_dict`` (``ENGINE``, ``NAME``,
``USER``, ``PASSWORD``, ``HOST``, ``PORT``, ``OPTIONS``); Fluxo's SQL store takes a
SQLAlchemy URL. :func:`store_url` turns one into the other with
``sqlalchemy.URL.create``, so no value is ever pasted into a string: a password
holding ``@`` or ``/`` needs no escaping, and the URL object never shows it
(Fluxo masks it in every message too).

The driver is Fluxo's for each database: psycopg 3 for PostgreSQL, PyMySQL for
MySQL and MariaDB (Django's own MySQL driver, mysqlclient, is not needed), the
standard library's sqlite3 for SQLite.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa
from django.core.exceptions import ImproperlyConfigured

from fluxo.contrib.django import debug

DRIVERS: Final = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "sqlite": "sqlite",
}
"""The SQLAlchemy driver name for each Django database vendor Fluxo's SQL store runs on."""

_POSTGRES_DJANGO_ONLY: Final = frozenset(
    {
        "assume_role",
        "context",
        "cursor_factory",
        "isolation_level",
        "pool",
        "prepare_threshold",
        "server_side_binding",
    }
)
"""``OPTIONS`` of Django's PostgreSQL backend that are Django's, not libpq's: left out."""

_MYSQL_DJANGO_ONLY: Final = frozenset({"isolation_level", "conv"})
"""``OPTIONS`` of Django's MySQL backend that are Django's, not the driver's: left out."""

_MYSQL_SSL_KEYS: Final = ("ca", "capath", "cert", "key", "cipher", "check_hostname")


@debug.sensitive
def store_url(vendor: str, settings_dict: Mapping[str, Any], alias: str = "default") -> sa.URL:
    """The URL of the Fluxo store on the Django database ``alias``.

    Args:
        vendor: the database's Django vendor (``connections[alias].vendor``):
            ``"postgresql"``, ``"mysql"`` or ``"sqlite"``.
        settings_dict: the database's settings (``connections[alias].settings_dict``;
            under Django's test runner, the test database's).
        alias: the database's alias, for messages.

    Raises:
        ImproperlyConfigured: the database is not one Fluxo's SQL store runs on, or
            its settings hold something a URL cannot carry; the message names the
            setting and suggests ``FLUXO["STORE"]``.
    """
    if vendor == "sqlite":
        return _sqlite(settings_dict, alias)
    if vendor == "postgresql":
        return _postgresql(settings_dict, alias)
    if vendor == "mysql":
        return _mysql(settings_dict, alias)
    raise ImproperlyConfigured(
        f"DATABASES[{alias!r}] is a {vendor} database, and Fluxo's SQL store runs on "
        "PostgreSQL, MySQL/MariaDB and SQLite; point FLUXO['DATABASE'] at one of those, or "
        "set FLUXO['STORE'] to a store URL (redis://..., postgresql://...)"
    )


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _port(value: Any, alias: str, key: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}][{key!r}] is {value!r}, not a port number"
        ) from None


def _scalar(value: Any, alias: str, key: str) -> str:
    """An option as URL query text; only plain values fit in a URL."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ImproperlyConfigured(
        f"DATABASES[{alias!r}]['OPTIONS'][{key!r}] is a {type(value).__name__}, which Fluxo "
        "cannot pass to the connections of its store; set FLUXO['STORE'] to the store's URL "
        "(with the option in its query string) instead"
    )


@debug.sensitive
def _sqlite(settings_dict: Mapping[str, Any], alias: str) -> sa.URL:
    name = settings_dict.get("NAME")
    text = "" if name is None else os.fspath(name)
    if text in ("", ":memory:") or "mode=memory" in text:
        raise ImproperlyConfigured(
            f"DATABASES[{alias!r}] is an SQLite database in memory (NAME {text or 'empty'!r}), "
            "which Fluxo's connections cannot share with Django's; give it a file. Under "
            "Django's test runner, name the test database's file: DATABASES[...]['TEST'] = "
            "{'NAME': BASE_DIR / 'test.sqlite3'}"
        )
    if text.startswith("file:"):  # an SQLite URI
        path, _, query = text.partition("?")
        params = dict(part.partition("=")[::2] for part in query.split("&") if part)
        return sa.URL.create("sqlite", database=path, query={**params, "uri": "true"})
    return sa.URL.create("sqlite", database=text)


@debug.sensitive
def _postgresql(settings_dict: Mapping[str, Any], alias: str) -> sa.URL:
    # As Django's backend: OPTIONS are libpq's, and USER, PASSWORD, HOST, PORT win over them.
    options = {
        key: value
        for key, value in dict(settings_dict.get("OPTIONS") or {}).items()
        if key not in _POSTGRES_DJANGO_ONLY
    }
    name = settings_dict.get("NAME")
    database = _text(name) or _text(options.pop("dbname", None))
    if name is None and database is None:
        database = "postgres"  # Django's meaning of NAME = None
        options.pop("service", None)
    user = _text(settings_dict.get("USER")) or _text(options.pop("user", None))
    options.pop("user", None)
    password = _text(settings_dict.get("PASSWORD")) or _text(options.pop("password", None))
    options.pop("password", None)
    host = _text(settings_dict.get("HOST")) or _text(options.pop("host", None))
    options.pop("host", None)
    port_value = _text(settings_dict.get("PORT")) or _text(options.pop("port", None))
    options.pop("port", None)
    query = {key: _scalar(value, alias, key) for key, value in options.items()}
    port = None
    if port_value is not None and "," in port_value:
        query["port"] = port_value  # one port per host of a list of hosts
    else:
        port = _port(port_value, alias, "PORT")
    if host is not None and ("/" in host or "," in host):
        query["host"] = host  # a socket directory, or several hosts: libpq reads them there
        host = None
    return sa.URL.create(
        DRIVERS["postgresql"],
        username=user,
        password=password,
        host=host,
        port=port,
        database=database,
        query=query,
    )


@debug.sensitive
def _mysql(settings_dict: Mapping[str, Any], alias: str) -> sa.URL:
    # As Django's backend: the settings first, then OPTIONS, which win.
    options = dict(settings_dict.get("OPTIONS") or {})
    for key in _MYSQL_DJANGO_ONLY:
        options.pop(key, None)
    user = _text(options.pop("user", None)) or _text(settings_dict.get("USER"))
    password = (
        _text(options.pop("password", None))
        or _text(options.pop("passwd", None))
        or _text(settings_dict.get("PASSWORD"))
    )
    options.pop("passwd", None)
    database = (
        _text(options.pop("database", None))
        or _text(options.pop("db", None))
        or _text(settings_dict.get("NAME"))
    )
    options.pop("db", None)
    host = _text(options.pop("host", None)) or _text(settings_dict.get("HOST"))
    port = _port(options.pop("port", None) or settings_dict.get("PORT"), alias, "PORT")
    query: dict[str, str] = {}
    if host is not None and host.startswith("/"):
        query["unix_socket"] = host
        host = None
    ssl = options.pop("ssl", None)
    if ssl is not None:
        if not isinstance(ssl, Mapping) or set(ssl) - set(_MYSQL_SSL_KEYS):
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}]['OPTIONS']['ssl'] holds what Fluxo cannot pass on "
                f"(it takes the keys {', '.join(_MYSQL_SSL_KEYS)}); set FLUXO['STORE'] to the "
                "store's URL instead"
            )
        query.update({f"ssl_{key}": _scalar(value, alias, "ssl") for key, value in ssl.items()})
    query.update({key: _scalar(value, alias, key) for key, value in options.items()})
    return sa.URL.create(
        DRIVERS["mysql"],
        username=user,
        password=password,
        host=host,
        port=port,
        database=database,
        query=query,
    )
