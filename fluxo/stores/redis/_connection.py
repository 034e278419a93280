"""The Redis store's link to the server: one server or a cluster, its scripts, its errors.

The URL names any node. Fluxo asks it ``INFO cluster`` on first use and talks to
a Redis Cluster through :class:`redis.cluster.RedisCluster` when
``cluster_enabled`` is 1, to a single server (or a primary with replicas)
otherwise; the URL's ``cluster`` parameter skips the question. The scripts are
registered with the client then. This is the only module of the store that
imports the ``redis`` package.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from fluxo import _errors, _redact
from fluxo.stores import _translate
from fluxo.stores.redis import _scripts

try:
    import redis as _redis
    import redis.cluster as _redis_cluster
    from redis import exceptions as _redis_errors
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise _errors.DefinitionError(
        "the Redis store needs the redis package; pip install 'fluxo[redis]'"
    ) from exc

Call = tuple[str, Sequence[str], Sequence[Any]]
"""A script call: the script's name, its keys and its arguments."""

DRIVER_ERRORS: Final = (_redis_errors.RedisError, _redis_errors.RedisClusterException)
"""What the driver raises when the server cannot be reached or answers with an error."""

_BUSY: Final = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
"""Error replies of a server that cannot take writes now, but may soon."""

_UNAVAILABLE: Final = (
    _redis_errors.ConnectionError,
    _redis_errors.TimeoutError,
    _redis_errors.ClusterDownError,
    _redis_errors.TryAgainError,
    _redis_errors.SlotNotCoveredError,
)


def _classify(exc: BaseException, action: str) -> _translate.Verdict | None:
    """Which Fluxo error a driver's ``exc`` is (see ``fluxo.stores._translate``)."""
    if isinstance(exc, _UNAVAILABLE):
        return _errors.StoreUnavailableError, f"Redis is unavailable: {exc}"
    if isinstance(exc, _redis_errors.ResponseError):
        if str(exc).startswith(_BUSY):  # the server may recover: back off and try again
            return _errors.StoreUnavailableError, f"Redis is unavailable: {exc}"
        return _errors.StoreRejectedError, f"Redis refused the command: {exc}"
    if isinstance(exc, (UnicodeEncodeError, _redis_errors.DataError)):
        return _errors.StoreRejectedError, f"Redis cannot store this value: {exc}"
    return None


class Connection:
    """A single server's client, and the cluster's once the mode is known.

    Thread-safe. Every driver call goes through :meth:`call`, :meth:`call_many`
    or :meth:`commands` (or runs inside :meth:`guard`), which translate the
    driver's errors into Fluxo's.

    Args:
        url: the URL the store was given.
        plain: that URL without Fluxo's parameters (see ``_layout.split_url``).
        cluster: ``True`` or ``False`` for the mode, ``None`` to ask the server.
    """

    def __init__(self, url: str, plain: str, cluster: bool | None) -> None:
        self._url = plain
        self._secrets = _redact.secrets_of(url)
        self._cluster_choice = cluster
        try:
            self.single: Any = _redis.Redis.from_url(plain)
        except ValueError as exc:
            error = _translate.wrapped(
                _errors.DefinitionError,
                f"bad Redis URL {url!r}: {exc}",
                exc,
                self._secrets,
                advice=_redact.escape_hint(url),
            )
            raise error from error.__cause__
        self._client: Any = None
        self.cluster = False
        """Whether the client is a cluster's (known once :meth:`connected` ran)."""
        self._scripts: dict[str, Any] = {}
        self._connect_lock = threading.Lock()
        self._errors = _translate.Translator(_classify, self._secrets)
        self._translated = self._errors.guard()
        self.closed = False

    def guard(self) -> _translate.Guard:
        """A context manager for direct driver calls: Fluxo's errors for the driver's.

        Raises:
            StoreError: the store is closed.
        """
        if self.closed:
            raise _errors.StoreError("this RedisStore is closed; create a new one")
        return self._translated

    def connected(self) -> Any:
        """The client, made on first use once the mode is known."""
        client = self._client
        if client is not None:
            return client
        with self._connect_lock:
            if self._client is None:
                cluster = self._cluster_choice
                if cluster is None:
                    try:
                        info = self.single.info("cluster")
                    except _redis_errors.ResponseError:
                        info = {}  # INFO refused: no cluster can be assumed
                    cluster = bool(int(info.get("cluster_enabled", 0)))
                if cluster:
                    try:
                        client = _redis_cluster.RedisCluster.from_url(self._url)
                    except ValueError as exc:
                        error = _translate.wrapped(
                            _errors.DefinitionError,
                            f"bad Redis Cluster URL {self._url!r}: {exc}",
                            exc,
                            self._secrets,
                        )
                        raise error from error.__cause__
                    except _redis_errors.RedisClusterException as exc:
                        unreachable = _translate.wrapped(
                            _errors.StoreUnavailableError,
                            f"no Redis Cluster answers at {self._url!r} ({exc}); for a "
                            "single server, drop cluster=true from the URL",
                            exc,
                            self._secrets,
                        )
                        raise unreachable from unreachable.__cause__
                else:
                    client = self.single
                self._scripts = {
                    name: client.register_script(code) for name, code in _scripts.SCRIPTS.items()
                }
                self.cluster = cluster
                self._client = client
            return self._client

    def call(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script and return its reply."""
        with self.guard():
            self.connected()
            return self._scripts[name](keys=list(keys), args=list(args))

    def call_many(self, calls: Sequence[Call], *, keep_errors: bool = False) -> list[Any]:
        """Run several scripts: in one pipeline on a single server, one by one on a cluster.

        With ``keep_errors``, a script of the pipeline that failed has its error in
        its place, and the others' results stand (they ran); else the error is raised.
        """
        if not calls:
            return []
        with self.guard():
            client = self.connected()
            if self.cluster or len(calls) == 1:
                return [
                    self._scripts[name](keys=list(keys), args=list(args))
                    for name, keys, args in calls
                ]
            pipe = client.pipeline(transaction=False)
            for name, keys, args in calls:
                pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
            results: list[Any] = pipe.execute(raise_on_error=False)
            for i, (name, keys, args) in enumerate(calls):
                if isinstance(results[i], _redis_errors.NoScriptError):
                    # The server lost its scripts (a restart): this one never ran.
                    results[i] = self._scripts[name](keys=list(keys), args=list(args))
                elif isinstance(results[i], Exception) and not keep_errors:
                    raise results[i]
            return results

    def commands(self, build: Callable[[Any], object]) -> list[Any]:
        """Run plain commands in one pipeline (per node on a cluster), in order."""
        with self.guard():
            pipe = self.connected().pipeline(transaction=False)
            build(pipe)
            results: list[Any] = pipe.execute()
            return results

    def pubsub(self, outage: bool) -> Any:
        """A subscriber connection, to the URL's node (on a cluster a publish reaches them all).

        After a failure on a cluster, to a primary picked at random instead.
        """
        if outage and self._client is not None and self.cluster:
            node = random.choice(self._client.get_primaries())
            return self._client.get_redis_connection(node).pubsub()
        return self.single.pubsub()

    def publish(self, channel: str, message: bytes) -> None:
        """Publish ``message`` on ``channel``; a failure is left to the caller."""
        (self._client or self.single).publish(channel, message)

    def close(self) -> None:
        """Close the clients and their connections."""
        self.closed = True
        if self._client is not None and self.cluster:
            self._client.close()
        self.single.close()
        self.single.connection_pool.disconnect()
