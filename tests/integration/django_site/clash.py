"""A workflow that takes the name of one the notes app defines, for the checks' tests."""

import fluxo


@fluxo.workflow(name="tests.integration.django_site.notes.workflows.note")
def note(text: str) -> int:
    return len(text)
