"""Nudges between processes on one SQLite file: their waiters wake without waiting for a poll.

The waiters here poll once an hour (``poll_interval=3600``) and wait far less
than that, so a wait that returns ``True`` was woken by a nudge: no test needs
a clock.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fluxo import history
from fluxo.stores import sql
from fluxo.stores.sql import _nudge

T0 = 1_700_000_000.0
STEP = history.StepCompleted("shop.charge", b'{"ok": true}')
HOUR = 3600.0
"""A poll interval no wait here reaches: only a nudge can wake it."""

pytestmark = pytest.mark.skipif(not _nudge.supported(), reason="needs Unix sockets")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path, so its sockets live next to the database."""
    path = Path(tempfile.mkdtemp(prefix="fx"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def db_file(short_dir: Path) -> Path:
    return short_dir / "fluxo.db"


@pytest.fixture
def url(db_file: Path) -> str:
    return f"sqlite:///{db_file}"


def wake_dir(db_file: Path) -> Path:
    return Path(f"{db_file}{_nudge.SUFFIX}")


def sockets(db_file: Path) -> list[str]:
    try:
        return sorted(os.listdir(wake_dir(db_file)))
    except FileNotFoundError:
        return []


def nudges_of(store: sql.SQLStore) -> _nudge.Nudges:
    nudges = store._watcher._nudges
    assert nudges is not None
    return nudges


@pytest.fixture
def python() -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Run code in another Python process, which reports on its stdout; ended after the test."""
    started: list[subprocess.Popen[str]] = []

    def run(code: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(60)
        if process.stdout is not None:
            process.stdout.close()


def wait_until(condition: object, what: str, timeout: float = 60) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting until {what}"
        time.sleep(0.02)


# -- across processes -------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["r1", None])
def test_a_write_in_another_process_nudges_a_waiter_here(
    url: str, run_id: str | None, python: Callable[[str], subprocess.Popen[str]]
) -> None:
    store = sql.SQLStore(url, poll_interval=HOUR)
    store.create_run("r1", "wf", b"[]", now=T0)
    token = store.change_token(run_id)  # binds this store's socket before the look
    writer = python(
        f"""
        from fluxo import history
        from fluxo.stores import sql
        store = sql.SQLStore({url!r})
        step = history.StepCompleted("shop.charge", b"1")
        store.append("r1", 1, [step], now={T0 + 1}, status=history.RunStatus.WAITING)
        store.close()
        """
    )

    woke = store.wait_for_change(run_id, 60, token)

    assert writer.wait(60) == 0
    assert woke  # no poll within the hour: the writer's nudge woke it
    assert store.load("r1").run.status is history.RunStatus.WAITING
    store.close()


def test_a_write_here_nudges_a_waiter_in_another_process(
    url: str, db_file: Path, python: Callable[[str], subprocess.Popen[str]]
) -> None:
    store = sql.SQLStore(url)
    store.create_run("r1", "wf", b"[]", now=T0)
    waiter = python(
        f"""
        from fluxo.stores import sql
        store = sql.SQLStore({url!r}, poll_interval={HOUR})
        token = store.change_token("r1")
        print("waiting", flush=True)
        print(store.wait_for_change("r1", 60, token), flush=True)
        store.close()
        """
    )
    assert waiter.stdout is not None
    assert waiter.stdout.readline().strip() == "waiting"

    store.send_signal("r1", "go", b"1", now=T0 + 1)

    assert waiter.stdout.readline().strip() == "True"
    assert waiter.wait(60) == 0
    assert sockets(db_file) == []  # it closed its store: its socket is gone
    store.close()


def test_the_socket_of_a_process_that_died_is_removed_by_the_next_nudge(
    url: str, db_file: Path, python: Callable[[str], subprocess.Popen[str]]
) -> None:
    store = sql.SQLStore(url)
    store.create_run("r1", "wf", b"[]", now=T0)
    waiter = python(
        f"""
        import time
        from fluxo.stores import sql
        store = sql.SQLStore({url!r})
        store.change_token(None)
        print("listening", flush=True)
        time.sleep(600)
        """
    )
    assert waiter.stdout is not None
    assert waiter.stdout.readline().strip() == "listening"
    assert [name.split("-")[0] for name in sockets(db_file)] == [str(waiter.pid)]
    waiter.send_signal(signal.SIGKILL)  # no close(): its socket file stays behind
    waiter.wait(60)
    assert len(sockets(db_file)) == 1

    store.release("nobody", "r1", now=T0)  # changes nothing: no nudge
    assert len(sockets(db_file)) == 1
    store.send_signal("r1", "go", b"1", now=T0 + 1)  # a change: its nudge is refused

    assert sockets(db_file) == []
    store.close()


# -- one process, two stores ---------------------------------------------------------


def test_two_stores_in_one_process_nudge_each_other(url: str) -> None:
    waiting = sql.SQLStore(url, poll_interval=HOUR)
    writing = sql.SQLStore(url, poll_interval=HOUR)
    waiting.create_run("r1", "wf", b"[]", now=T0)
    token = waiting.change_token(None)

    writing.create_run("r2", "wf", b"[]", now=T0)

    assert waiting.wait_for_change(None, 60, token)
    token = writing.change_token("r1")
    waiting.request_cancel("r1", now=T0 + 1)
    assert writing.wait_for_change("r1", 60, token)
    waiting.close()
    writing.close()


def test_a_nudge_names_its_run_so_waiters_on_other_runs_sleep_on(url: str) -> None:
    waiting = sql.SQLStore(url, poll_interval=HOUR)
    writing = sql.SQLStore(url)
    waiting.create_run("r1", "wf", b"[]", now=T0)
    waiting.create_run("r2", "wf", b"[]", now=T0)
    token = waiting.change_token("r1")
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(waiting.wait_for_change("r1", 60)))
    waiter.start()
    any_token = waiting.change_token(None)

    writing.send_signal("r2", "go", b"1", now=T0 + 1)

    assert waiting.wait_for_change(None, 60, any_token)  # a wait on any run wakes
    time.sleep(0.2)
    assert waiter.is_alive()  # the wait on r1 does not
    writing.send_signal("r1", "go", b"1", now=T0 + 1)
    waiter.join(60)
    assert woke == [True]
    assert waiting.wait_for_change("r1", 60, token)
    waiting.close()
    writing.close()


def test_closing_a_store_removes_its_socket_and_the_empty_directory(
    url: str, db_file: Path
) -> None:
    first = sql.SQLStore(url)
    second = sql.SQLStore(url)
    first.create_run("r1", "wf", b"[]", now=T0)
    assert sockets(db_file) == []  # nothing waits yet: no socket, no directory
    first.change_token(None)
    second.change_token(None)
    assert len(sockets(db_file)) == 2
    assert stat_mode(wake_dir(db_file)) == 0o700

    first.close()
    assert sockets(db_file) == [Path(str(nudges_of(second).path)).name]
    second.close()
    assert not wake_dir(db_file).exists()
    assert not [t for t in threading.enumerate() if t.name == "fluxo-sqlite-nudges"]


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_removed_socket_file_is_bound_again(
    url: str, db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_nudge, "TICK", 0.05)  # how often the listener looks up
    store = sql.SQLStore(url, poll_interval=HOUR)
    writing = sql.SQLStore(url)
    store.create_run("r1", "wf", b"[]", now=T0)
    store.change_token(None)
    nudges = nudges_of(store)
    first = nudges.path
    assert first is not None
    os.unlink(first)  # as a cleaner of temporary files might

    wait_until(lambda: nudges.path not in (None, first), "it binds a new socket", timeout=60)
    token = store.change_token("r1")
    writing.send_signal("r1", "go", b"1", now=T0 + 1)
    assert store.wait_for_change("r1", 60, token)
    store.close()
    writing.close()


def test_a_crowded_socket_wakes_every_waiter(db_file: Path) -> None:
    """Past CROWDED waiting datagrams one may have been dropped: every waiter looks."""
    db_file.touch()
    received: list[str | None] = []
    busy = threading.Event()
    free = threading.Event()

    def on_nudge(run_id: str | None) -> None:
        received.append(run_id)
        busy.set()
        free.wait(60)

    listening = _nudge.Nudges(lambda: str(db_file), on_nudge)
    sending = _nudge.Nudges(lambda: str(db_file), lambda run_id: None)
    assert listening.listen()
    sending.send("r0")
    assert busy.wait(60)  # the listener is held in the feed, its queue fills up
    for i in range(1, 20):
        sending.send(f"r{i}")  # more than the queue holds: some are dropped

    free.set()
    wait_until(lambda: None in received, "every waiter is woken")
    assert received[0] == "r0"
    listening.close()
    sending.close()


# -- where nudges do not go: polling stays ---------------------------------------------


def test_a_wait_on_a_file_that_does_not_exist_leaves_nothing(short_dir: Path) -> None:
    store = sql.SQLStore(f"sqlite:///{short_dir / 'typo.db'}", poll_interval=HOUR)
    assert store.wait_for_change(None, 0.05) is False
    assert not nudges_of(store).listening
    assert list(short_dir.iterdir()) == []
    store.close()


def test_a_database_in_memory_has_no_nudges() -> None:
    store = sql.SQLStore("sqlite://")
    assert store._watcher._nudges is None
    assert store.wait_for_change(None, 0.05) is False
    store.close()


def test_without_unix_sockets_waiters_poll(
    url: str, db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(socket, "AF_UNIX")
    store = sql.SQLStore(url, poll_interval=0.05)  # polls once a second
    other = sql.SQLStore(url)
    assert store._watcher._nudges is None
    store.create_run("r1", "wf", b"[]", now=T0)
    token = store.change_token(None)

    other.create_run("r2", "wf", b"[]", now=T0)

    assert store.wait_for_change(None, 60, token)  # found by a look
    assert not wake_dir(db_file).exists()
    store.close()
    other.close()


def test_a_uri_filename_is_asked_of_sqlite(db_file: Path) -> None:
    uri = f"sqlite:///file:{db_file}?uri=true"
    sql.SQLStore(f"sqlite:///{db_file}").close()  # makes the file and its tables
    waiting = sql.SQLStore(uri, poll_interval=HOUR)
    writing = sql.SQLStore(f"sqlite:///{db_file}")
    assert nudges_of(waiting).directory() == (f"{os.path.realpath(db_file)}.fluxo-wake", False)
    token = waiting.change_token(None)

    writing.create_run("r1", "wf", b"[]", now=T0)

    assert waiting.wait_for_change(None, 60, token)
    waiting.close()
    writing.close()


# -- where the sockets live -----------------------------------------------------------


def test_a_path_too_long_for_a_socket_uses_a_private_folder_in_the_temp_dir(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(short_dir))
    deep = short_dir / ("d" * 90)
    deep.mkdir()
    db_file = deep / "fluxo.db"
    where = _nudge.directory_for(str(db_file))
    assert where is not None
    directory, private = where
    assert private
    assert Path(directory).parent == short_dir
    assert len(os.fsencode(directory)) + 25 <= _nudge.PATH_MAX + 1
    assert _nudge.directory_for(str(deep / ".." / deep.name / "fluxo.db")) == where

    waiting = sql.SQLStore(f"sqlite:///{db_file}", poll_interval=HOUR)
    writing = sql.SQLStore(f"sqlite:///{db_file}")
    writing.create_run("r1", "wf", b"[]", now=T0)
    token = waiting.change_token(None)
    assert stat_mode(Path(directory)) == 0o700
    writing.create_run("r2", "wf", b"[]", now=T0)
    assert waiting.wait_for_change(None, 60, token)
    waiting.close()
    writing.close()
    assert not os.path.exists(directory)


def test_a_private_folder_others_may_write_is_not_used(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(short_dir))
    deep = short_dir / ("d" * 90)
    deep.mkdir()
    db_file = deep / "fluxo.db"
    where = _nudge.directory_for(str(db_file))
    assert where is not None
    os.mkdir(where[0])
    os.chmod(where[0], 0o777)  # as if somebody else had made it, to read the run ids

    store = sql.SQLStore(f"sqlite:///{db_file}", poll_interval=0.05)
    store.create_run("r1", "wf", b"[]", now=T0)  # the file exists: only the folder is wrong
    assert not nudges_of(store).listen()
    assert store.wait_for_change(None, 0.05) is False  # waits as before, by polling
    store.close()
    assert os.listdir(where[0]) == []  # not used, so not removed


def test_datagrams_name_a_run_or_any_run() -> None:
    for run_id in ("r1", "ordre-é-17", "x" * 1024):
        assert _nudge.run_of(_nudge.payload(run_id)) == run_id
    for unnamed in (None, "x" * 1025, "\ud800"):
        assert _nudge.payload(unnamed) == _nudge.ANY
    for odd in (b"", b"*", b"r", b"v2:r1", b"r\xff"):
        assert _nudge.run_of(odd) is None


# -- forks ---------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_its_parents_socket_alone(url: str, db_file: Path) -> None:
    store = sql.SQLStore(url, poll_interval=HOUR)
    store.create_run("r1", "wf", b"[]", now=T0)
    token = store.change_token("r1")
    path = nudges_of(store).path
    assert path is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads running
        pid = os.fork()
    if pid == 0:  # the child: write with the inherited store, close it, report by exit code
        code = 1
        try:
            store.send_signal("r1", "go", b"1", now=T0 + 1)
            store.close()
            code = 0 if os.path.exists(path) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists(path)
    assert store.wait_for_change("r1", 60, token)  # the child's write nudged the parent
    store.close()
    assert sockets(db_file) == []
