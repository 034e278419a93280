"""Translating driver errors: one shape for every store, passwords never shown."""

from __future__ import annotations

import pytest

from fluxo import _errors
from fluxo.stores import _translate

PASSWORD = "S3cretPw"


class DriverError(Exception):
    """What a database driver raises."""


def classify(exc: BaseException, action: str) -> _translate.Verdict | None:
    if isinstance(exc, DriverError):
        if "busy" in str(exc):
            return _errors.StoreUnavailableError, f"{action or 'it'} failed: {exc}"
        return _errors.StoreRejectedError, f"{action or 'it'} was refused: {exc}"
    return None


translator = _translate.Translator(classify, [PASSWORD])


def test_a_driver_error_becomes_the_classified_fluxo_error_with_its_cause() -> None:
    cause = DriverError("server busy")

    expected = pytest.raises(_errors.StoreUnavailableError, match="reading failed: server busy")
    with expected as info, translator.guard("reading"):
        raise cause

    assert info.value.__cause__ is cause
    assert info.value.__suppress_context__


def test_passwords_are_masked_and_a_cause_showing_one_is_not_chained() -> None:
    with pytest.raises(_errors.StoreRejectedError) as info, translator.guard():
        raise DriverError(f"bad login for postgresql://u:{PASSWORD}@db/shop")

    assert PASSWORD not in str(info.value)
    assert "u:***@db" in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__  # as `raise ... from None`: no traceback shows it


def test_errors_that_are_not_the_drivers_pass_through() -> None:
    with pytest.raises(_errors.RunNotFoundError), translator.guard():
        raise _errors.RunNotFoundError("r1")
    with pytest.raises(KeyError), translator.guard():
        raise KeyError("x")

    assert translator.error(KeyError("x")) is None


def test_error_translates_an_exception_caught_already() -> None:
    error = translator.error(DriverError("too large"), "writing")

    assert isinstance(error, _errors.StoreRejectedError)
    assert str(error) == "writing was refused: too large"


def test_wrapped_builds_any_fluxo_error_the_same_way() -> None:
    cause = ValueError(f"port x of redis://:{PASSWORD}@h:x/0")

    error = _translate.wrapped(_errors.DefinitionError, f"bad URL: {cause}", cause, [PASSWORD])

    assert isinstance(error, _errors.DefinitionError)
    assert PASSWORD not in str(error)
    assert error.__cause__ is None
