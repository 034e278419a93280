"""A griffe extension: Fluxo's docstrings cite objects with Sphinx roles; render them as links.

The docstrings say :class:`~fluxo.stores.Store` or :meth:`Engine.worker`, as the
style guide's Sphinx heritage does. mkdocstrings reads Markdown, so each role is
rewritten, when the docstring is loaded, into an optional cross-reference: a link
where the API reference documents the target, plain code where it does not (a
private helper, a third-party class), never a broken link.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|data|exc|mod|obj):`(?P<tilde>~?)(?P<target>[^`]+)`")


def _replace(match: re.Match[str], module: str) -> str:
    target = match["target"].strip().removesuffix("()")
    title = target.rsplit(".", 1)[-1] if match["tilde"] else target
    identifier = target if target.startswith(("fluxo", "sqlalchemy")) else f"{module}.{target}"
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring into an optional autorefs link."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the roles of one object's docstring as it is loaded."""
        docstring = obj.docstring
        if docstring is None or ":`" not in docstring.value:
            return
        module = obj.module.path
        docstring.value = ROLE.sub(lambda found: _replace(found, module), docstring.value)
