"""Keeping the store's password off Django's error pages and error emails.

Django's error reporter (the ``DEBUG`` page, the emails to ``ADMINS``) lists the
settings, hiding only those whose name says they are secret (``API``, ``TOKEN``,
``KEY``, ``SECRET``, ``PASS``, ``SIGNATURE``). ``FLUXO["STORE"]`` is none of
those, and a store URL may hold a password: ``redis://:s3cret@cache/0``. Set::

    DEFAULT_EXCEPTION_REPORTER_FILTER = "fluxo.contrib.django.debug.ExceptionReporterFilter"

and every URL-shaped value in the settings (``FLUXO["STORE"]``, a cache's
``LOCATION``...) is shown with its password masked. Fluxo's own functions that
hold such a URL are marked ``sensitive_variables``, so their frames' locals are
hidden from the report whatever the filter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.views.debug import SafeExceptionReporterFilter
from django.views.decorators.debug import sensitive_variables

from fluxo import _redact

_F = TypeVar("_F", bound=Callable[..., Any])


def sensitive(function: _F) -> _F:
    """Django's ``sensitive_variables()``: the function's locals are hidden from error reports."""
    return cast(_F, sensitive_variables()(function))


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, also masking the password of every URL in a setting's text values."""

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        """As Django's, then mask the passwords in what is left of a text value."""
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return _redact.redact(cleansed)
        return cleansed
