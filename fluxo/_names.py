"""Ids and names: what may name a run, a workflow, a step, a signal, a patch or a worker.

Every name Fluxo keeps is text in every store, so one set of rules holds on all
of them:

* at most :data:`MAX_ID_LENGTH` characters;
* no control character (PostgreSQL's text cannot hold NUL, and the others break
  logs and the command line's tables) and no lone surrogate (no store can encode
  it as UTF-8): :func:`name_problem`;
* a few forms are Fluxo's own: signal names starting with :data:`SIGNAL_PREFIX`
  (a child run sends its outcome under one), and :data:`CHAIN_SEPARATOR` in a run
  id given at start (Fluxo names the runs of a chain and child runs with it).

Each check raises :class:`~fluxo.DefinitionError` naming the value, what holds it
and the rule, before anything reaches a store. ``fluxo.history`` and
``fluxo.stores`` keep their public names for these rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fluxo import _errors

MAX_ID_LENGTH = 255
"""The longest run id, workflow name or worker id every store accepts."""

CHAIN_SEPARATOR = "~"
"""Joins a logical workflow id and a run's position in its chain: ``order-17~3``.

User-given run ids may not contain it, and generated ones never do, so the id of
every run ``fluxo.continue_as_new`` starts is unambiguous."""

SCHEDULE_WORKFLOW_PREFIX = "fluxo.schedule:"
"""The names of the workflows that run schedules, Fluxo's own: ``fluxo.schedule:NAME``."""

SIGNAL_PREFIX = "fluxo:"
"""Signal names Fluxo keeps for itself; user signal names may not start with it."""

_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Characters no name or id may hold: control characters (NUL first) and lone surrogates."""


def name_problem(value: str) -> str | None:
    """What makes ``value`` unfit to name a run, workflow, step, signal or worker, if anything.

    Names and ids are stored as text on every store. PostgreSQL's text cannot hold
    NUL; no store can encode a lone surrogate as UTF-8; and control characters
    break logs and the command line's tables. Returns ``None`` for a fit name.
    """
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    code = ord(found[0])
    if 0xD800 <= code <= 0xDFFF:
        return f"holds a lone surrogate (U+{code:04X}) at index {found.start()}"
    return f"holds the control character U+{code:04X} at index {found.start()}"


def check_name(what: str, value: str) -> str:
    """Return ``value`` if it may name ``what`` (see :func:`name_problem`), else raise.

    Raises:
        DefinitionError: naming the value, what holds it and the rule.
    """
    problem = name_problem(value)
    if problem is not None:
        raise _errors.DefinitionError(name_rule(what, value, problem))
    return value


def name_rule(what: str, value: str, problem: str) -> str:
    """The message for a name :func:`name_problem` refuses: the value, the problem, the rule."""
    return (
        f"{what} {_errors.quoted(value)} {problem}; names and ids may not contain control "
        "characters (such as NUL) or lone surrogates, which stores cannot hold"
    )


def check_run_id(run_id: object) -> str:
    """Refuse a run id no run can have, before it reaches a store (NUL fails PostgreSQL)."""
    if not isinstance(run_id, str):
        raise _errors.DefinitionError(f"a run id is a string, not {_errors.quoted(run_id)}")
    return check_name("the run id", run_id)


def check_target_run_id(run_id: object, what: str) -> str:
    """A run id a workflow names (``fluxo.signal(run_id, ...)``): a non-empty string."""
    if not isinstance(run_id, str) or not run_id:
        raise _errors.DefinitionError(f"{what} takes a run id string, not {run_id!r}")
    return check_name("the run id", run_id)


def check_start_id(run_id: object) -> str:
    """A run id given at start (``workflow.options(id=...)``): storable, and not Fluxo's form."""
    if not isinstance(run_id, str) or not run_id or len(run_id) > MAX_ID_LENGTH:
        raise _errors.DefinitionError(
            f"a run id must be a non-empty string of at most {MAX_ID_LENGTH} characters, "
            f"not {_errors.quoted(run_id)}"
        )
    check_name("the run id", run_id)
    if CHAIN_SEPARATOR in run_id:
        raise _errors.DefinitionError(
            f"a run id may not contain {CHAIN_SEPARATOR!r} (got {_errors.quoted(run_id)}): "
            "Fluxo names the runs fluxo.continue_as_new() starts with it; use another character"
        )
    return run_id


def check_signal_name(name: object) -> str:
    """Return ``name`` if it may name a user's signal, else raise ``DefinitionError``."""
    if not isinstance(name, str) or not name:
        raise _errors.DefinitionError(
            f"a signal name must be a non-empty string, not {_errors.quoted(name)}"
        )
    if name.startswith(SIGNAL_PREFIX):
        raise _errors.DefinitionError(
            f"signal names starting with {SIGNAL_PREFIX!r} are Fluxo's own (child runs "
            f"send their outcome under one); rename signal {_errors.quoted(name)}"
        )
    return check_name("the signal name", name)


def check_patch_id(change: object) -> str:
    """Return ``change`` if it may name a patch (``fluxo.patched``), else raise."""
    if not isinstance(change, str) or not change:
        raise _errors.DefinitionError(f"a patch id must be a non-empty string, not {change!r}")
    return check_name("the patch id", change)


def worker_id_problem(worker_id: object) -> str | None:
    """Why ``worker_id`` cannot name a worker, or None when it can."""
    if not isinstance(worker_id, str) or not worker_id:
        return f"worker_id must be a non-empty string, not {_errors.quoted(worker_id)}"
    problem = name_problem(worker_id)
    return None if problem is None else name_rule("worker_id", worker_id, problem)


def definition_name_problems(
    label: str, name: object, persisted: str, aliases: Sequence[str]
) -> list[str]:
    """What is wrong with the names of a workflow or step (``label``), every problem at once.

    ``persisted`` is the name its history will hold: ``name`` when given, else the
    default ``module.qualname``.
    """
    problems = []
    if name is not None and (not isinstance(name, str) or not name.strip()):
        problems.append(f"{label}: name= must be a non-empty string, got {_errors.quoted(name)}")
    if len(persisted) > MAX_ID_LENGTH:
        problems.append(
            f"{label}: its name is {len(persisted)} characters long; stores keep at most "
            f"{MAX_ID_LENGTH}, so pass a shorter name="
        )
    if isinstance(aliases, str) or not all(isinstance(a, str) and a for a in aliases):
        problems.append(
            f"{label}: aliases= must be a list of non-empty strings, got {_errors.quoted(aliases)}"
        )
    else:
        for what, value in [("name=", name), *(("an alias", a) for a in aliases)]:
            if isinstance(value, str) and (problem := name_problem(value)):
                problems.append(f"{label}: " + name_rule(what, value, problem))
    return problems


def check_new_id_length(run_id: str, what: str, fix: str) -> None:
    """Refuse an id Fluxo builds (a child's, the next run's) that no store could hold."""
    if len(run_id) > MAX_ID_LENGTH:
        raise _errors.DefinitionError(
            f"{what} {run_id[:40]!r}... would be longer than {MAX_ID_LENGTH} characters; {fix}"
        )


def unknown_workflow_hint(workflow: str) -> str:
    """How to make a worker know ``workflow``, a workflow name it met in a run."""
    if workflow.startswith("__main__."):
        return (
            "the name was given in a script run without a module name, such as "
            "`python -c` or an interactive session, where this worker imports the code "
            f"under another; give the workflow name={workflow.partition('.')[2]!r} or "
            f"aliases=[{workflow!r}], or define it in a module file"
        )
    return "add the workflow to Engine(workflows=[...])"
