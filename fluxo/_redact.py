"""Keeping passwords out of messages: no error or log line of Fluxo shows one.

Store URLs carry passwords (``postgresql://app:s3cret@db/shop``), and a URL that
does not parse (a port that is not a number, a password with an unescaped ``@``)
is still a URL to the person who typed it. Every message that may hold a URL, or
a driver's words about one, goes through :func:`redact` before it is raised or
logged. It masks:

* the password of anything URL-shaped, ``scheme://user:password@host``, parsed
  or not: everything from the first ``:`` after ``scheme://`` to the last ``@``
  of the URL, so an unescaped ``@`` or ``/`` in the password stays hidden too
  (``redis://:pw@host``, ``mongodb://u:pw@h1,h2/db``);
* ``password=``, ``passwd=`` and ``pwd=`` values (URL queries, libpq DSNs);
* every occurrence of the secrets a caller knows (:func:`secrets_of` a URL), for
  driver messages that quote a password without its URL around it. A driver
  that misreads a URL quotes a piece of its password (``redis://:pw/x@host``
  reads as host ``""``, "port" ``pw``), so those secrets include the pieces
  of the password between ``/ ? # : ; @``, when long enough to mean something.

When in doubt it masks more (a URL whose path or query holds an ``@`` after a
``host:port`` loses what lies between): a message that says less is better than
one that leaks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, TypeVar
from urllib.parse import unquote

_E = TypeVar("_E", bound=BaseException)

MASK: Final = "***"
"""What a password is replaced with."""

MIN_SECRET: Final = 4
"""Secrets shorter than this are masked in URLs only: replacing every ``a`` of a
message would make it unreadable, and so short a password protects nothing."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://(?P<rest>[^\s'\"`<>]*)")
_PAIR = re.compile(r"(?i)\b(password|passwd|pwd)=([^&\s'\";]*)")
_DELIMITERS = re.compile(r"[/?#:;@]")
"""Where a URL parser that misreads a password cuts it: the pieces it may quote."""


def _password_span(rest: str) -> tuple[int, int] | None:
    """Where the password lies in the part of a URL after ``scheme://`` (None: it has none)."""
    at = rest.rfind("@")
    colon = rest.find(":", 0, max(at, 0))
    if at == -1 or colon == -1:
        return None
    return colon + 1, at


def _mask_url(match: re.Match[str]) -> str:
    whole, rest = match[0], match["rest"]
    span = _password_span(rest)
    if span is None:
        return whole
    start = match.start("rest") - match.start()
    return whole[: start + span[0]] + MASK + whole[start + span[1] :]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every password in it masked (see the module docstring).

    Args:
        text: a message, a URL, a traceback: anything.
        secrets: passwords to mask wherever they appear (those shorter than
            :data:`MIN_SECRET` only where they sit in a URL).

    Example:
        >>> redact("cannot parse postgresql://app:s3cret@db:x/shop")
        'cannot parse postgresql://app:***@db:x/shop'
    """
    for secret in secrets:
        if len(secret) >= MIN_SECRET:
            text = text.replace(secret, MASK)
    text = _URL.sub(_mask_url, text)
    return _PAIR.sub(rf"\1={MASK}", text)


def redact_value(text: str) -> str:
    """Like :func:`redact`, for a value meant to be a URL that may lack its ``scheme://``.

    ``postgresql:app:s3cret@db/shop`` is no URL, but it holds a password all the same.
    """
    if "://" in text:
        return redact(text)
    span = _password_span(text)
    if span is not None:
        text = text[: span[0]] + MASK + text[span[1] :]
    return redact(text)


def secrets_of(url: str) -> tuple[str, ...]:
    """The passwords a URL (or any text) holds, as written and percent-decoded, and their pieces.

    Used to mask them in messages that quote them without their URL, which
    :func:`redact` alone would not recognize. A password is everything between
    the ``:`` after ``scheme://`` (and an optional user) and the last ``@``, so
    an unescaped ``/``, ``?``, ``#`` or ``@`` in it stays inside; the pieces it
    splits into at those characters (and ``:`` and ``;``) are secrets too when
    at least :data:`MIN_SECRET` long, as a driver that parsed the URL its own
    way quotes one of them as a port, a host or a path. A value without
    ``scheme://`` (``postgresql:u:pw@host/db``) is read the same way.
    """
    found: list[str] = []
    for match in _URL.finditer(url):
        rest = match["rest"]
        span = _password_span(rest)
        if span is not None:
            found.append(rest[span[0] : span[1]])
    if "://" not in url:
        span = _password_span(url)
        if span is not None:
            found.append(url[span[0] : span[1]])
    found.extend(match[2] for match in _PAIR.finditer(url))
    found += [unquote(secret) for secret in found]
    found += [
        piece
        for secret in found
        for piece in _DELIMITERS.split(secret)
        if len(piece) >= MIN_SECRET and piece != secret
    ]
    return tuple(dict.fromkeys(secret for secret in found if secret and secret != MASK))


def escape_hint(url: str) -> str:
    """Advice for an unusable URL whose password holds a character a URL parser cuts at.

    Returns ``""`` when the password (see :func:`secrets_of`) holds none of
    ``/ ? # @``, else a clause to append to the error, which says how to write it.
    """
    rest = url.partition("://")[2] or url
    span = _password_span(rest)
    if span is None or not any(char in rest[span[0] : span[1]] for char in "/?#@"):
        return ""
    return (
        "; a password holding / ? # or @ must be percent-encoded in the URL "
        "(/ as %2F, ? as %3F, # as %23, @ as %40, % as %25)"
    )


def leaks(exc: BaseException, secrets: Iterable[str]) -> bool:
    """Tell whether the text of ``exc`` or of an exception it chains shows a secret.

    A store wraps a driver's exception in its own (``raise StoreError(...) from
    exc``); when the driver's text shows the password, the wrapper is raised
    ``from None`` instead, so no traceback prints it.
    """
    wanted = [secret for secret in secrets if secret]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if any(secret in text for secret in wanted) or redact(text) != text:
            return True
        current = current.__cause__ or current.__context__
    return False


def cause(exc: BaseException, secrets: Iterable[str]) -> BaseException | None:
    """What to chain a wrapping error to: ``exc``, or ``None`` when its text :func:`leaks`.

    Example::

        raise StoreError(redact(f"cannot open {url}", secrets)) from cause(exc, secrets)
    """
    return None if leaks(exc, secrets) else exc


def scrubbed(error: _E, secrets: Iterable[str] = ()) -> _E:
    """Return ``error`` with its message redacted (for errors built from a driver's words)."""
    text = str(error)
    clean = redact(text, secrets)
    if clean != text:
        error.args = (clean,)
    return error
