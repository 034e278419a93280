"""The documentation site tells the truth: its examples run, its pages match the code.

Every page shows programs from ``examples/`` through ``--8<--`` includes, so the
text a reader sees is the file run here. Each ``# prints: TEXT`` comment of an
example is a line the program must print, in that order. ``mkdocs build --strict``
itself (broken links, missing includes, pages left out of the nav) is run by
``scripts/test``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import fluxo
from fluxo import cli, stores

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
INCLUDE = re.compile(r'^--8<-- "(?P<file>[^":]+)(?::[\w-]+)?"$', re.MULTILINE)
PRINTS = re.compile(r"#\s*prints: (?P<text>.*)$", re.MULTILINE)

SPECIAL = {
    "stores.py": "runs on every store, below",
    "cli_app.py": "the app cli_tour.sh drives, below",
    "order.py": "a module: test_order_workflow.py tests it (tests/integration/test_examples.py)",
    "quickstart.py": "run twice by tests/integration/test_examples.py",
}
"""Example programs the generic test leaves to a test of their own, and why."""


def pages() -> list[Path]:
    return sorted(path for path in DOCS.rglob("*.md") if "_ext" not in path.parts)


def included() -> set[str]:
    return {found["file"] for page in pages() for found in INCLUDE.finditer(page.read_text())}


def programs() -> list[Path]:
    return sorted(
        path
        for path in EXAMPLES.glob("*.py")
        if not path.name.startswith("test_") and path.name not in SPECIAL
    )


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLUXO_")}


def run_example(script: Path, cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{script.name}:\n{done.stdout}\n{done.stderr}"
    assert "Warning" not in done.stderr, done.stderr
    return done.stdout


def check_prints(script: Path, stdout: str) -> None:
    """Each ``# prints:`` line of the script is a line of its output, in order."""
    expected = [found["text"].rstrip() for found in PRINTS.finditer(script.read_text())]
    lines = [line.rstrip() for line in stdout.splitlines()]
    position = 0
    for text in expected:
        assert text in lines[position:], (
            f"{script.name} should print {text!r} after line {position}; it printed:\n{stdout}"
        )
        position = lines.index(text, position) + 1


# -- the examples ------------------------------------------------------------------------


def test_every_example_is_shown_on_a_page_and_every_include_exists() -> None:
    shown = included()
    assert shown, "no page includes an example"
    assert {path.name for path in EXAMPLES.iterdir() if path.suffix in (".py", ".sh")} <= shown
    assert all((EXAMPLES / name).is_file() for name in shown)


def test_the_examples_say_what_they_print() -> None:
    assert all(PRINTS.search(path.read_text()) for path in programs())


@pytest.mark.parametrize("script", programs(), ids=lambda path: path.stem)
def test_an_example_runs_and_prints_what_it_says(script: Path, tmp_path: Path) -> None:
    check_prints(script, run_example(script, tmp_path))


STORE_FIXTURES = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("clean_postgres_url", id="postgres", marks=pytest.mark.postgres),
    pytest.param("clean_mysql_url", id="mysql", marks=pytest.mark.mysql),
    pytest.param("clean_redis_url", id="redis", marks=pytest.mark.redis),
    pytest.param("clean_redis_cluster_url", id="redis-cluster", marks=pytest.mark.redis),
    pytest.param("clean_mongo_url", id="mongo", marks=pytest.mark.mongo),
]


@pytest.mark.parametrize("source", STORE_FIXTURES)
def test_the_store_example_runs_on_every_store(
    source: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if source == "memory":
        url = "memory://"
    elif source == "sqlite":
        url = f"sqlite:///{tmp_path / 'fluxo.db'}"
    else:
        url = request.getfixturevalue(source)
    script = EXAMPLES / "stores.py"
    check_prints(script, run_example(script, tmp_path, url))


@pytest.mark.slow
def test_the_cli_tour_runs_as_printed(tmp_path: Path) -> None:
    for name in ("cli_app.py", "cli_tour.sh"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    env = environment()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(
        ["bash", "cli_tour.sh"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "schema is up to date" in out
    assert "r-order-1" in out.splitlines()
    assert "order-2 failed: step 'cli_app.charge' failed after 1 attempt" in out
    assert "order-3 cancelled" in out.splitlines()
    assert "run 'order-2' is pending again" in out
    assert "1 history replayed: 1 ok, 0 failed" in out
    assert "0 finished runs would be deleted (dry run: nothing deleted)" in out.splitlines()
    assert (tmp_path / "histories" / "order-1.json").is_file()


# -- the pages match the code ------------------------------------------------------------

MERMAID = re.compile(r"```mermaid\n(?P<body>.*?)```", re.DOTALL)
STATE = r"\[\*\]|\w+"
TRANSITION = re.compile(
    rf"^\s*(?P<source>{STATE})\s*-->\s*(?P<target>{STATE})\s*(?::(?P<label>.*))?$"
)


def state_diagram() -> tuple[set[str], list[str]]:
    """The architecture page's state diagram: its states, and its transitions' labels."""
    blocks = [
        found["body"]
        for found in MERMAID.finditer((DOCS / "architecture.md").read_text())
        if found["body"].lstrip().startswith("stateDiagram")
    ]
    assert len(blocks) == 1, "architecture.md should hold one Mermaid state diagram"
    states: set[str] = set()
    labels: list[str] = []
    for line in blocks[0].splitlines()[1:]:
        if not line.strip() or line.split()[0] == "direction":
            continue
        found = TRANSITION.match(line)
        assert found, f"not a transition: {line!r}"
        states |= {found["source"], found["target"]} - {"[*]"}
        labels.append(found["label"] or "")
    return states, labels


def test_the_state_diagram_shows_exactly_the_run_statuses() -> None:
    states, _ = state_diagram()
    assert states == {status.value for status in fluxo.RunStatus}


def table_rows(header: str) -> list[list[str]]:
    """The cells of the architecture page's table whose header row starts with ``header``."""
    text = (DOCS / "architecture.md").read_text()
    table = text[text.index(header) :].split("\n\n", 1)[0].splitlines()[2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in table]


def test_every_transition_of_the_state_diagram_is_explained() -> None:
    _, labels = state_diagram()
    rows = table_rows("| | what happens |")
    assert sorted(label.strip() for label in labels if label) == [row[0] for row in rows]


def test_the_pages_tables_name_only_real_fields_operations_and_events() -> None:
    """Every snake_case name in the tables is a RunInfo field, a Store method or an event kind."""
    known = (
        {field.name for field in dataclasses.fields(fluxo.RunInfo)}
        | {name for name in dir(stores.Store) if not name.startswith("_")}
        | set(fluxo.history.EVENT_TYPES)
    )
    cells = [row[2] for row in table_rows("| | what happens |")]
    cells += [" ".join(row[:3]) for row in table_rows("| field | set by |")]
    named = {word for cell in cells for word in re.findall(r"`([a-z]+(?:_[a-z]+)*)`", cell)}
    assert {"create_run", "claim", "append", "reopen", "wake_requested"} <= named
    assert named <= known, named - known


def test_the_architecture_page_tables_the_run_flags() -> None:
    text = (DOCS / "architecture.md").read_text()
    table = text[text.index("| field | set by |") :].split("\n\n", 1)[0]
    fields = set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?", table, re.MULTILINE)[0])
    named = {
        name
        for row in re.findall(r"^\| ((?:`\w+`(?:, )?)+) \|", table, re.MULTILINE)
        for name in re.findall(r"`(\w+)`", row)
    }
    assert fields <= named
    assert named == {
        "lease_owner",
        "lease_until",
        "ready_at",
        "wake_requested",
        "cancel_requested",
        "recoveries",
        "start_at",
    }
    assert named <= {field.name for field in dataclasses.fields(fluxo.RunInfo)}


def test_the_architecture_page_names_only_modules_that_exist() -> None:
    text = (DOCS / "architecture.md").read_text()
    paths = set(re.findall(r"`(fluxo/[\w/.]*)`", text))
    parts = set(re.findall(r"^\| `(_\w+\.py)` \|", text, re.MULTILINE))
    assert {"fluxo/_executor/", "fluxo/_runner.py", "fluxo/_runtime.py"} <= paths
    assert "_cursor.py" in parts
    for path in paths:
        assert (ROOT / path).exists(), path
    package = ROOT / "fluxo" / "_executor"
    assert parts == {p.name for p in package.glob("_*.py") if p.name != "__init__.py"}


def commands(group: click.Group, prefix: str) -> list[str]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += commands(command, path)
        else:
            found.append(path)
    return found


def test_every_cli_command_has_a_section_on_the_cli_page() -> None:
    every = commands(cli.cli, "fluxo")
    assert "fluxo runs list" in every
    assert "fluxo db upgrade" in every
    text = (DOCS / "cli.md").read_text()
    headings = set(re.findall(r"^## (fluxo [\w ]+?)\s*$", text, re.MULTILINE))
    for command in every:
        group = command.rsplit(" ", 1)[0]
        assert command in headings or (group in headings and f"`{command}`" in text), command


# -- the store pages' durability settings --------------------------------------------------


@pytest.mark.postgres
def test_postgres_connections_keep_the_servers_synchronous_commit(clean_postgres_url: str) -> None:
    """docs/stores/postgresql.md: Fluxo changes no server setting."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    from fluxo.stores import sql

    def setting(engine: sa.Engine) -> object:
        try:
            with engine.connect() as conn:
                return conn.exec_driver_sql("SHOW synchronous_commit").scalar()
        finally:
            engine.dispose()

    plain = sa.create_engine(sql.normalize_url(clean_postgres_url), poolclass=NullPool)
    assert setting(sql.make_engine(clean_postgres_url)) == setting(plain)


def test_mongo_collections_take_the_urls_write_concern() -> None:
    """docs/stores/mongodb.md: the URL's w= and journal= apply; Fluxo sets none of its own."""
    pytest.importorskip("pymongo")
    from fluxo.stores import mongo

    store = mongo.MongoStore("mongodb://127.0.0.1:1/shop?w=majority&journal=true")
    default = mongo.MongoStore("mongodb://127.0.0.1:1/shop")
    try:  # the client connects lazily: no server is needed to read its settings
        assert store._runs.write_concern.document == {"w": "majority", "j": True}
        assert store._events.write_concern.document == {"w": "majority", "j": True}
        assert store._queues._records.write_concern.document == {"w": "majority", "j": True}
        assert default._runs.write_concern.document == {}
    finally:
        store.close()
        default.close()
