"""No error or log line of Fluxo shows a password, whatever the URL it came in.

The redaction function itself, then every store kind's unusable or unreachable URL
through ``open_store``, ``Engine()`` and the command line (``fluxo runs list
--store``, ``fluxo worker``, with and without ``--verbose``).
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import pytest

import fluxo
from fluxo import _redact, cli
from fluxo.stores import sql
from fluxo.stores.sql import _engine

PASSWORD = "S3cretPw"

BAD_URLS = [
    # unparseable: a port that is no number, a password with an unescaped "@" or "/"
    f"postgresql+psycopg://u:{PASSWORD}@host:notaport/db",
    f"postgresql://u:{PASSWORD}@db@host/db",
    f"mysql+pymysql://u:{PASSWORD}@host:notaport/db",
    f"sqlite://u:{PASSWORD}@host/x.db",
    f"redis://:{PASSWORD}@host:x/0",
    f"redis://u:{PASSWORD}@host:6379/0?socket_timeout=abc",
    f"mongodb://u:{PASSWORD}@h1:x,h2/db",
    f"mongodb://u:{PASSWORD}/x@h1/db",
    f"postgresql://u@host:bad/db?password={PASSWORD}",
    f"postgresql:u:{PASSWORD}@host/db",  # no "://"
    f"{PASSWORD}://u:{PASSWORD}@host/db",  # a scheme no store handles
    # parseable, but nothing answers
    f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/db",
    f"mysql://u:{PASSWORD}@127.0.0.1:1/db",
    f"postgresql://u@127.0.0.1:1/db?password={PASSWORD}",
    f"redis://:{PASSWORD}@127.0.0.1:1/0",
    f"mongodb://u:{PASSWORD}@127.0.0.1:1/db?serverSelectionTimeoutMS=200",
]

ODD_PASSWORDS = [
    f"{PASSWORD}/x",
    f"{PASSWORD}?x",
    f"{PASSWORD}#x",
    f"{PASSWORD}:x",
    f"{PASSWORD}@x",
    f"{PASSWORD}%2Fx",
    f"{PASSWORD};x",
    f"ab/{PASSWORD}/cd",
]
"""Passwords written into a URL unescaped: every driver cuts them somewhere else."""

ODD_URL_SHAPES = {
    "postgres": "postgresql+psycopg://u:{}@127.0.0.1:1/db",
    "mysql": "mysql+pymysql://u:{}@127.0.0.1:1/db",
    "sqlite": "sqlite://u:{}@host/x.db",
    "redis": "redis://:{}@127.0.0.1:1/0",
    "redis-user": "redis://u:{}@127.0.0.1:1/0",
    "mongo": "mongodb://u:{}@127.0.0.1:1/db?serverSelectionTimeoutMS=200",
}

ODD_URLS = [
    pytest.param(shape.format(password), id=f"{kind}-{password.replace(PASSWORD, 'pw')}")
    for kind, shape in ODD_URL_SHAPES.items()
    for password in ODD_PASSWORDS
]


@pytest.fixture(autouse=True)
def quick_mongo_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing answers these URLs: a MongoDB client gives up after 0.2 s, not the default 5 s.

    The URLs set ``serverSelectionTimeoutMS`` themselves, but a ``#`` in a password
    makes the rest of the URL a fragment, which pymongo drops with that option.
    """
    monkeypatch.setattr("fluxo.stores.mongo._store.DEFAULT_SERVER_SELECTION_TIMEOUT_MS", 200)


def all_text(exc: BaseException) -> str:
    """What a traceback of ``exc`` prints, and the text of every exception it chains."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{current!s} {current!r}")
        hidden = current.__suppress_context__
        current = current.__cause__ or (None if hidden else current.__context__)
    return "\n".join(parts)


# -- the function ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "postgresql+psycopg://app:s3cret@db.example:5432/shop",
            "postgresql+psycopg://app:***@db.example:5432/shop",
        ),
        ("postgresql://app@db/shop", "postgresql://app@db/shop"),
        ("redis://:s3cret@cache:6379/0?prefix=shop", "redis://:***@cache:6379/0?prefix=shop"),
        ("redis://:p%40ss@cache?prefix=x", "redis://:***@cache?prefix=x"),
        ("redis://cache:6379/0?prefix=x", "redis://cache:6379/0?prefix=x"),
        ("mongodb://u:s3cret@h1:27017,h2:27017/shop", "mongodb://u:***@h1:27017,h2:27017/shop"),
        ("mysql+pymysql://db/shop?password=s3cret&x=1", "mysql+pymysql://db/shop?password=***&x=1"),
        ("sqlite:////var/lib/fluxo.db", "sqlite:////var/lib/fluxo.db"),
        ("not a url", "not a url"),
        # unparseable ones, inside a message
        (
            "'postgresql+psycopg://u:s3cret@host:notaport/db' is not a database URL",
            "'postgresql+psycopg://u:***@host:notaport/db' is not a database URL",
        ),
        ("at postgresql://u:p@ss/w@host/db: failed", "at postgresql://u:***@host/db: failed"),
        ("dsn host=db password=s3cret port=5432", "dsn host=db password=*** port=5432"),
        (
            "two: redis://:a1@h/0 and mongodb://u:b2@h/db",
            "two: redis://:***@h/0 and mongodb://u:***@h/db",
        ),
    ],
)
def test_redact_masks_every_password_in_a_text(text: str, shown: str) -> None:
    assert _redact.redact(text) == shown
    assert _redact.redact(shown) == shown  # idempotent


def test_known_secrets_are_masked_wherever_they_appear() -> None:
    secrets = _redact.secrets_of("postgresql://u:p%40ssw0rd@h:x/db?password=other-one")

    assert set(secrets) == {"p%40ssw0rd", "p@ssw0rd", "ssw0rd", "other-one"}
    assert _redact.redact("auth failed for p@ssw0rd, other-one", secrets) == (
        "auth failed for ***, ***"
    )
    assert _redact.redact("a b c", ["a"]) == "a b c"  # too short to mask outside a URL


@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_the_secrets_of_a_url_include_the_pieces_a_driver_may_quote(password: str) -> None:
    secrets = _redact.secrets_of(f"redis://u:{password}@127.0.0.1:1/0")

    assert password in secrets
    assert PASSWORD in secrets  # the piece between the characters a parser cuts at
    assert "x" not in secrets  # too short to mean anything
    assert "ab" not in secrets
    quoted = f"Port could not be cast to integer value as '{PASSWORD}'"
    assert PASSWORD not in _redact.redact(quoted, secrets)


def test_a_url_without_a_scheme_has_secrets_too() -> None:
    assert PASSWORD in _redact.secrets_of(f"u:{PASSWORD}/x@host/db")
    assert PASSWORD in _redact.secrets_of(f"postgresql:u:{PASSWORD}@host/db")


def test_the_advice_to_percent_encode_comes_only_for_a_password_that_needs_it() -> None:
    assert "%2F" in _redact.escape_hint(f"redis://:{PASSWORD}/x@h/0")
    assert "%40" in _redact.escape_hint(f"postgresql://u:{PASSWORD}@x@h/db")
    assert _redact.escape_hint(f"redis://:{PASSWORD}@h/0") == ""
    assert _redact.escape_hint("redis://h/0") == ""


def test_a_value_without_a_scheme_is_masked_too() -> None:
    assert PASSWORD not in _redact.redact_value(f"postgresql:u:{PASSWORD}@host/db")
    assert _redact.redact_value("sqlite:///x.db") == "sqlite:///x.db"


def test_a_cause_that_shows_a_secret_is_not_chained() -> None:
    quiet, loud = ValueError("port 'x' is not a number"), ValueError(f"bad {PASSWORD}")

    assert _redact.cause(quiet, [PASSWORD]) is quiet
    assert _redact.cause(loud, [PASSWORD]) is None
    assert _redact.cause(ValueError("at redis://:pw@h/0"), []) is None


# -- the stores and the engine --------------------------------------------------------


def touch(url: str, how: str) -> None:
    """Open a store from ``url`` and use it (a Redis or MongoDB store connects on first use)."""
    store = fluxo.open_store(url) if how == "open_store" else fluxo.Engine(url, workflows=[]).store
    try:
        store.list_runs()
    finally:
        store.close()


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("how", ["open_store", "Engine"])
def test_open_store_and_engine_never_show_the_password(url: str, how: str) -> None:
    with pytest.raises(fluxo.FluxoError) as info:
        touch(url, how)

    assert PASSWORD not in all_text(info.value), all_text(info.value)


# pymongo warns of the "option" it finds after a "?" in the password (never naming it)
@pytest.mark.filterwarnings("ignore:Unknown option:UserWarning")
@pytest.mark.parametrize("url", ODD_URLS)
@pytest.mark.parametrize("how", ["open_store", "Engine"])
def test_a_password_with_url_characters_never_shows(url: str, how: str) -> None:
    with pytest.raises(fluxo.FluxoError) as info:
        touch(url, how)

    assert PASSWORD not in all_text(info.value), all_text(info.value)


def test_an_unparseable_redis_url_says_how_to_write_the_password() -> None:
    with pytest.raises(fluxo.DefinitionError) as info:
        fluxo.open_store(f"redis://:{PASSWORD}/x@127.0.0.1:1/0")

    assert "percent-encoded" in str(info.value)
    assert "%2F" in str(info.value)
    assert PASSWORD not in all_text(info.value)


def test_the_sql_store_shows_its_url_without_passwords() -> None:
    url = sql.normalize_url(f"postgresql://u:{PASSWORD}@db/shop?password={PASSWORD}x")

    assert _engine.redacted(url) == "postgresql+psycopg://u:***@db/shop?password=***"


# -- the command line -----------------------------------------------------------------


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out + err


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("verbose", [False, True], ids=["plain", "verbose"])
@pytest.mark.parametrize(
    "command",
    [
        ("runs", "list", "--store"),
        ("runs", "purge", "--older-than", "1d", "--store"),
        ("db", "upgrade", "--url"),
        ("db", "current", "--url"),
        ("db", "check", "--url"),
    ],
    ids=["runs-list", "runs-purge", "db-upgrade", "db-current", "db-check"],
)
def test_commands_never_show_the_password(
    url: str,
    verbose: bool,
    command: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLUXO_STORE_URL", raising=False)
    monkeypatch.delenv("FLUXO_APP", raising=False)

    flags = ["--verbose"] if verbose else []
    code, output = run([*flags, *command, url], capsys)

    assert code != 0
    assert "Error: " in output
    assert PASSWORD.lower() not in output.lower()
    if command[0] == "runs":
        assert ("Traceback" in output) is verbose


COMMANDS = [
    ("runs", "list", "--store"),
    ("runs", "show", "r1", "--store"),
    ("runs", "purge", "--older-than", "1d", "--store"),
    ("db", "upgrade", "--url"),
    ("db", "current", "--url"),
    ("db", "check", "--url"),
]


@pytest.mark.filterwarnings("ignore:Unknown option:UserWarning")
@pytest.mark.parametrize("url", ODD_URLS)
def test_commands_never_show_a_password_with_url_characters(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLUXO_STORE_URL", raising=False)
    monkeypatch.delenv("FLUXO_APP", raising=False)

    for command in COMMANDS:
        code, output = run(["--verbose", *command, url], capsys)  # the traceback too

        assert code != 0, command
        assert "Error: " in output, command
        assert PASSWORD.lower() not in output.lower(), output


@pytest.mark.parametrize(
    "url",
    [f"u:{PASSWORD}@host/db", f"{PASSWORD}://u:{PASSWORD}@host/db", f"redis://:{PASSWORD}@h/0"],
)
@pytest.mark.parametrize("command", ["upgrade", "current", "check"])
def test_db_commands_mask_a_url_they_refuse(
    url: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run(["db", command, "--url", url], capsys)

    assert code == 2
    assert PASSWORD.lower() not in output.lower(), output
    assert "Invalid value for '--url'" in output


def test_the_store_url_from_the_environment_is_masked_in_every_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXO_STORE_URL", f"redis://:{PASSWORD}/x@127.0.0.1:1/0")

    code, output = run(["--verbose", "runs", "list"], capsys)

    assert code == 1
    assert PASSWORD not in output


@pytest.mark.filterwarnings("ignore:Unknown option:UserWarning")
@pytest.mark.parametrize("url", [*BAD_URLS, *ODD_URLS])
def test_worker_never_shows_the_password(
    url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "badapp.py").write_text(
        "import fluxo\n"
        f"engine = fluxo.Engine({url!r}, workflows=[])\n"
        "try:\n"
        "    engine.store.list_runs()\n"
        "finally:\n"
        "    engine.close()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "badapp", raising=False)

    code, output = run(["worker", "badapp:engine"], capsys)

    assert code != 0
    assert PASSWORD not in output, output


def test_the_worker_log_masks_passwords() -> None:
    formatter = cli._RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise ConnectionError(f"lost postgresql://u:{PASSWORD}@db/shop")
    except ConnectionError:
        record = logging.LogRecord(
            "fluxo", logging.ERROR, __file__, 1, "store %s failed", ("redis://:pw1234@h/0",), None
        )
        record.exc_info = sys.exc_info()
    line = formatter.format(record)

    assert "pw1234" not in line
    assert PASSWORD not in line
    assert "redis://:***@h/0" in line
