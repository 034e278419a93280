"""One way for every store to turn its driver's exceptions into Fluxo's.

Users and the engine catch only Fluxo's errors, so each store translates its
driver's exceptions where they leave the driver, into one of three:

* ``StoreUnavailableError``: the database cannot be reached, or cannot take the
  operation now (the engine tries again later);
* ``StoreRejectedError``: the database refuses the data itself, for good (too
  large, text it cannot hold);
* ``StoreError``: anything else.

A backend says which, and in what words, in one *classify* function; a
:class:`Translator` does the rest the same way for every backend: it masks every
password in the message (:func:`fluxo._redact.redact`, with the secrets of the
store's URL) and chains the driver's exception as the cause, unless that
exception's own text shows a password (:func:`fluxo._redact.cause`), in which case
nothing is chained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TypeVar

from fluxo import _errors, _redact

E = TypeVar("E", bound=_errors.FluxoError)

Verdict = tuple[type[_errors.StoreError], str]
"""A classification: the error to raise and its message (passwords not yet masked)."""

Classify = Callable[[BaseException, str], "Verdict | None"]
"""A backend's classification of an exception raised during ``action``; ``None``: not a driver's."""


def wrapped(
    kind: type[E],
    message: str,
    exc: BaseException,
    secrets: Iterable[str] = (),
    *,
    advice: str = "",
) -> E:
    """Build ``kind(message)`` for the driver's ``exc``: passwords masked, cause chained if safe.

    Raising the result is ``raise kind(redact(message) + advice) from cause(exc)``.

    Args:
        kind: the Fluxo error to build.
        message: its message; every password in it is masked.
        exc: the driver's exception it replaces.
        secrets: the passwords of the store's URL (:func:`fluxo._redact.secrets_of`).
        advice: Fluxo's own words, holding no secret, added after the masking (which
            could otherwise mask a word of them that a piece of a password matches).
    """
    secrets = tuple(secrets)
    error = kind(_redact.redact(message, secrets) + advice)
    error.__cause__ = _redact.cause(exc, secrets)
    error.__suppress_context__ = True
    return error


class Translator:
    """Translates one store's driver exceptions, classified by its backend.

    Use :meth:`error` where the exception is caught already, or :meth:`guard` as
    a context manager around driver calls. Exceptions the backend does not
    classify (Fluxo's own, a bug's) pass through untouched.

    Args:
        classify: the backend's ``classify(exc, action)``.
        secrets: the passwords of the store's URL, masked in every message.
    """

    __slots__ = ("_classify", "_plain", "_secrets")

    def __init__(self, classify: Classify, secrets: Iterable[str] = ()) -> None:
        self._classify = classify
        self._secrets = tuple(secrets)
        self._plain = Guard(self, "")

    def error(self, exc: BaseException, action: str = "") -> _errors.StoreError | None:
        """The Fluxo error for ``exc``, raised during ``action``; ``None``: not a driver's."""
        verdict = self._classify(exc, action)
        if verdict is None:
            return None
        kind, message = verdict
        return wrapped(kind, message, exc, self._secrets)

    def guard(self, action: str = "") -> Guard:
        """A context manager that raises :meth:`error` in place of a driver's exception."""
        return self._plain if not action else Guard(self, action)


class Guard:
    """What :meth:`Translator.guard` returns; stateless, so one serves every thread."""

    __slots__ = ("_action", "_translator")

    def __init__(self, translator: Translator, action: str) -> None:
        self._translator = translator
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            error = self._translator.error(exc, self._action)
            if error is not None:
                raise error
