"""The tests' workflows, found by autodiscovery."""

from __future__ import annotations

import fluxo
from fluxo.contrib.django import current_settings
from tests.integration.django_site.notes.models import Note


@fluxo.step
def write_note(text: str) -> int:
    """Write a note in the Fluxo database (``FLUXO["DATABASE"]``), beside the run."""
    return Note.objects.using(current_settings().database).create(text=text).pk


@fluxo.workflow
def note(text: str) -> int:
    return write_note(text)


@fluxo.workflow
def wait_for_go() -> str:
    return fluxo.wait_for_signal("go", type=str)


@fluxo.step
def explode() -> None:
    raise RuntimeError("boom")


@fluxo.workflow
def fails() -> None:
    explode()
