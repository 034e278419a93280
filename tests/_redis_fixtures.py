"""The Redis fixtures: ``clean_redis_url``, ``clean_redis_cluster_url``: a fresh prefix per test.

The server comes from ``FLUXO_TEST_REDIS_URL``, else ``redis://127.0.0.1:6379/0``.
The cluster comes from ``FLUXO_TEST_REDIS_CLUSTER_URL`` (any node of it); else
three primaries are started once per session from the ``redis-server`` binary, on
free ports in a temporary directory, joined with ``redis-cli --cluster create``
and stopped at the end of the session.

Each test gets a prefix of its own (``fluxotest-<random>``) whose keys are deleted
afterwards (on every primary of a cluster), so tests never meet each other's data.
A server that cannot be reached or started skips the tests that need it, or
fails them when ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import redis

REDIS_ENV = "FLUXO_TEST_REDIS_URL"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
REDIS_CLUSTER_ENV = "FLUXO_TEST_REDIS_CLUSTER_URL"
CLUSTER_NODES = 3
CLUSTER_START_TIMEOUT = 30.0


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key of ``prefix`` (the prefix is random hex: no glob characters).

    One key per command: on a node of a cluster the keys lie in many slots.
    """
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 500]:
            pipe.delete(key)
        pipe.execute()


@pytest.fixture
def clean_redis_url() -> Iterator[str]:
    """A Redis URL with a key prefix of this test's own, whose keys are deleted afterwards."""
    try:
        import redis
    except ImportError:
        pytest.skip("the redis package is not installed (pip install 'fluxo[redis]')")
    server = os.environ.get(REDIS_ENV) or REDIS_DEFAULT
    client = redis.Redis.from_url(server, socket_connect_timeout=5)
    try:
        client.ping()
    except Exception as exc:
        client.close()
        message = f"Redis unreachable at {server}: {str(exc).splitlines()[0]}; set {REDIS_ENV}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    prefix = f"fluxotest-{secrets.token_hex(6)}"
    separator = "&" if "?" in server else "?"
    try:
        yield f"{server}{separator}prefix={prefix}"
    finally:
        try:
            _delete_prefix(client, prefix)
        finally:
            client.close()


# -- Redis Cluster ------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Ports free for a node and for its cluster bus (the port + 10000)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _cluster_ok(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    try:
        info = client.cluster("info")
    except redis.RedisError:
        return False
    finally:
        client.close()
    if isinstance(info, bytes | str):  # unparsed: "key:value" lines
        text = info.decode() if isinstance(info, bytes) else info
        info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return str(info.get("cluster_state")) == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384


def _wait_until(check: Any, what: str, timeout: float = CLUSTER_START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


def _start_cluster(root: Path) -> tuple[list[subprocess.Popen[bytes]], str]:
    """Start three primaries in ``root``, join them, and return the processes and a URL."""
    import redis

    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        _unavailable(
            "redis-server and redis-cli are needed to start a Redis Cluster for the tests "
            f"(apt-get install redis-server); or set {REDIS_CLUSTER_ENV}"
        )
        raise AssertionError("unreachable")
    ports = _free_ports(CLUSTER_NODES)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node = root / str(port)
            node.mkdir()
            processes.append(
                subprocess.Popen(
                    [
                        server,
                        *("--port", str(port), "--bind", "127.0.0.1"),
                        *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                        *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                        *("--dir", str(node), "--logfile", str(node / "redis.log")),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

        def all_up() -> bool:
            for port, process in zip(ports, processes, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {port} exited ({process.returncode})")
                client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
                try:
                    client.ping()
                except redis.RedisError:
                    return False
                finally:
                    client.close()
            return True

        _wait_until(all_up, "the Redis Cluster nodes' start")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=CLUSTER_START_TIMEOUT,
        )
        _wait_until(lambda: all(_cluster_ok(port) for port in ports), "cluster_state:ok")
    except BaseException:
        _stop(processes)
        raise
    return processes, f"redis://127.0.0.1:{ports[0]}/0"


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis Cluster node's URL: ``FLUXO_TEST_REDIS_CLUSTER_URL``, else a cluster started here."""
    try:
        import redis.cluster
    except ImportError:
        pytest.skip("the redis package is not installed (pip install 'fluxo[redis]')")
    configured = os.environ.get(REDIS_CLUSTER_ENV)
    if configured:
        try:
            client = redis.cluster.RedisCluster.from_url(configured, socket_connect_timeout=5)
            client.close()
        except Exception as exc:
            _unavailable(
                f"Redis Cluster unreachable at {configured}: {str(exc).splitlines()[0]}; "
                f"set {REDIS_CLUSTER_ENV}"
            )
        yield configured
        return
    try:
        processes, url = _start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _unavailable(f"could not start a Redis Cluster: {exc}; set {REDIS_CLUSTER_ENV}")
        return
    try:
        yield url
    finally:
        _stop(processes)


@pytest.fixture(scope="session")
def redis_cluster_client(redis_cluster_url: str) -> Iterator[Any]:
    """One client of the test Redis Cluster for the session, to delete the tests' keys.

    Made once: a cluster client learns the cluster's layout as it is made, which
    costs more than the work a test asks of it.
    """
    import redis.cluster

    client = redis.cluster.RedisCluster.from_url(redis_cluster_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def clean_redis_cluster_url(redis_cluster_url: str, redis_cluster_client: Any) -> Iterator[str]:
    """A Redis Cluster URL with a key prefix of this test's own, deleted afterwards."""
    prefix = f"fluxotest-{secrets.token_hex(6)}"
    separator = "&" if "?" in redis_cluster_url else "?"
    yield f"{redis_cluster_url}{separator}prefix={prefix}"
    for node in redis_cluster_client.get_primaries():
        _delete_prefix(redis_cluster_client.get_redis_connection(node), prefix)
