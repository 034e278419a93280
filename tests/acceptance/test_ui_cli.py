"""``fluxo ui`` as its users start it: a real server process, requests over real HTTP.

Binding an address other than loopback needs a token, and then every page refuses a
request without it; on loopback the server answers loopback names only; the live
stream tells an open page when another process changes the store.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import fluxo
from tests.acceptance import _servers

pytest.importorskip("uvicorn")

TOKEN = "acceptance-token-of-the-dashboard"
FLUXO = str(Path(sys.executable).with_name("fluxo"))  # the installed console script


@fluxo.workflow(name="uicli.hello")
def hello(name: str) -> str:
    return f"hello {name}"


@pytest.fixture
def store_file(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with fluxo.Engine(url, workflows=[hello]) as engine:
        engine.start(hello.options(id="first"), "ann")
    return url


def _ui(tmp_path: Path, store: str, *args: str) -> tuple[_servers.Processes, int]:
    port = _servers.free_port()
    command = [FLUXO, "ui", "--store", store, "--port", str(port), *args]
    processes = _servers.Processes(
        command, _servers.environment(("FLUXO_",)), tmp_path / "ui.log", tmp_path
    )
    processes.start()
    return processes, port


def _wait_up(port: int, tmp_path: Path, **headers: str) -> None:
    _servers.wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/static/fluxo.css", headers=headers),
        30,
        "fluxo ui to answer",
        tmp_path,
    )


def test_a_non_loopback_bind_without_a_token_does_not_start(
    store_file: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [FLUXO, "ui", "--store", store_file, "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=_servers.environment(("FLUXO_",)),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--host 0.0.0.0 is reachable from other machines: give a token too" in done.stderr
    assert "Traceback" not in done.stderr


PAGES = ["/", "/?status=completed", "/counts", "/run?id=first", "/event?id=first&seq=0",
         "/live", "/static/fluxo.css", "/static/fluxo.js", "/nothing-here"]  # fmt: skip


def test_a_non_loopback_bind_refuses_every_page_without_the_token(
    store_file: str, tmp_path: Path
) -> None:
    processes, port = _ui(tmp_path, store_file, "--host", "0.0.0.0", "--token", TOKEN)
    try:
        bearer = {"authorization": f"Bearer {TOKEN}"}
        _wait_up(port, tmp_path, **bearer)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for path in PAGES:
                reply = client.get(path)
                assert reply.status_code == 401, path
                assert "first" not in reply.text
                assert client.post(path, data={"id": "first"}).status_code == 401
            assert client.post("/run/cancel", data={"id": "first"}).status_code == 401
            assert client.get("/", headers=bearer).status_code == 200
            assert "first" in client.get("/run?id=first", headers=bearer).text
            opened = client.get("/run", params={"id": "first", "token": TOKEN})
            assert opened.status_code == 303
            assert opened.headers["location"] == "/run?id=first"
            assert client.get("/run?id=first").status_code == 200  # by the cookie now
    finally:
        processes.stop()


def test_the_token_may_come_from_the_environment(store_file: str, tmp_path: Path) -> None:
    port = _servers.free_port()
    command = [FLUXO, "ui", "--store", store_file]
    command += ["--host", "0.0.0.0", "--port", str(port)]
    env = _servers.environment(("FLUXO_",), FLUXO_UI_TOKEN=TOKEN)
    processes = _servers.Processes(command, env, tmp_path / "ui.log", tmp_path)
    processes.start()
    try:
        _wait_up(port, tmp_path, authorization=f"Bearer {TOKEN}")
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 401
    finally:
        processes.stop()


def test_on_loopback_it_answers_loopback_names_only(store_file: str, tmp_path: Path) -> None:
    processes, port = _ui(tmp_path, store_file)
    try:
        _wait_up(port, tmp_path)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/").status_code == 200
        assert httpx.get(f"http://localhost:{port}/").status_code == 200
        rebound = httpx.get(base + "/", headers={"host": f"attacker.example:{port}"})
        assert rebound.status_code == 421
    finally:
        processes.stop()


def test_on_another_loopback_address_it_answers_that_address(
    store_file: str, tmp_path: Path
) -> None:
    processes, port = _ui(tmp_path, store_file, "--host", "127.0.0.2")
    try:
        _servers.wait_for(
            lambda: httpx.get(f"http://127.0.0.2:{port}/static/fluxo.css"),
            30,
            "fluxo ui to answer",
            tmp_path,
        )
        assert httpx.get(f"http://127.0.0.2:{port}/").status_code == 200
        rebound = httpx.get(f"http://127.0.0.2:{port}/", headers={"host": f"a.example:{port}"})
        assert rebound.status_code == 421
    finally:
        processes.stop()


def test_the_live_stream_tells_of_a_change_made_elsewhere(store_file: str, tmp_path: Path) -> None:
    processes, port = _ui(tmp_path, store_file)
    try:
        _wait_up(port, tmp_path)
        seen: list[str] = []
        opened = threading.Event()

        def listen() -> None:
            url = f"http://127.0.0.1:{port}/live"
            with httpx.stream("GET", url, timeout=30) as reply:
                assert reply.headers["content-type"] == "text/event-stream"
                for line in reply.iter_lines():
                    seen.append(line)
                    opened.set()
                    if line == "event: change":
                        return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert opened.wait(30), "the stream never opened"
        time.sleep(0.5)
        with fluxo.Engine(store_file, workflows=[hello]) as engine:  # another writer
            engine.start(hello.options(id="second"), "bo")
        listener.join(30)
        assert "event: change" in seen, seen
        assert seen[0] == "retry: 3000"
    finally:
        processes.stop()


def test_a_taken_port_is_a_one_line_error(store_file: str, tmp_path: Path) -> None:
    processes, port = _ui(tmp_path, store_file)
    try:
        _wait_up(port, tmp_path)
        done = subprocess.run(
            [FLUXO, "ui", "--store", store_file, "--port", str(port)],
            capture_output=True,
            text=True,
            env=_servers.environment(("FLUXO_",)),
            timeout=60,
            check=False,
        )
        assert done.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
        assert "pick another --port" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        processes.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_with_a_stream_open_closes_the_store_and_exits_0(
    store_file: str, tmp_path: Path, signum: int
) -> None:
    processes, port = _ui(tmp_path, store_file)
    try:
        _wait_up(port, tmp_path)
        opened = threading.Event()

        def listen() -> None:
            with contextlib.suppress(httpx.HTTPError):
                url = f"http://127.0.0.1:{port}/live"
                with httpx.stream("GET", url, timeout=60) as reply:
                    for _ in reply.iter_lines():
                        opened.set()

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert opened.wait(30), "the stream never opened"
        processes.current.send_signal(signum)
        assert processes.current.wait(timeout=30) == 0, _servers.logs(tmp_path)
        listener.join(30)
        assert not listener.is_alive(), "the stream was left open"
    finally:
        processes.stop()
    log = _servers.logs(tmp_path)
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log
    wal = Path(store_file.removeprefix("sqlite:///") + "-wal")
    assert not wal.exists(), "the store was not closed: SQLite's write-ahead log is left"
