"""Nudges between processes that share one SQLite file, so that their waiters wake at once.

SQLite has no ``NOTIFY``: a process learns of another's commits only by looking
(``PRAGMA data_version``, once every ``poll_interval``). To wake sooner, each SQL
store on a SQLite file binds, once something waits on it, a Unix datagram socket
in a directory of that database's (see :func:`directory_for`), and each store
that commits a change to a run sends the run's id to every other socket there,
after the commit. A :class:`Nudges` thread hands what its socket receives to the
store's change feed, which wakes the waiters of that run and those of any run.

A nudge is a hint, and nothing depends on its arrival:

* sending never blocks and ignores every error: a queue that is full, a socket
  that is gone;
* a socket that refuses (its process died without closing its store) is removed
  by the sender that finds it so;
* a receiver that finds its queue crowded (a drop is possible) wakes every waiter;
* the look every ``poll_interval`` stays, so a lost nudge costs at most one
  interval, as without nudges. So do processes that cannot reach the directory
  (another user's, an older Fluxo) and platforms without ``AF_UNIX``.

A datagram is ``b"r"`` and the run's id in UTF-8, or ``b"*"`` for a change of
runs unknown; anything else also reads as ``b"*"``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import selectors
import socket
import stat
import tempfile
import threading
import weakref
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

SUFFIX: Final = ".fluxo-wake"
"""What the directory next to a database file adds to the file's name."""
PATH_MAX: Final = 103
"""The longest socket path in bytes: ``sun_path`` holds 104 bytes on macOS and the BSDs
(108 on Linux), the terminating NUL included."""
_NAME: Final = re.compile(r"[0-9]{1,10}-[0-9a-f]{8}\.sock")
"""A socket's file name: the pid of its process and a random token."""
_NAME_MAX: Final = 24
"""The longest socket file name :data:`_NAME` allows."""
_ID_MAX: Final = 1024
"""The longest run id, in UTF-8 bytes, a nudge names; a longer one is sent as "any run"."""
_RECEIVE_MAX: Final = 2048
"""The receive buffer: a datagram longer than that is cut, and so reads as "any run"."""
ANY: Final = b"*"
"""The datagram of a change of runs unknown."""
CROWDED: Final = 8
"""Datagrams waiting at once past which one may have been dropped (Linux queues 10 by
default): the receiver then wakes every waiter."""
_BATCH: Final = 256
"""The most datagrams the receiver takes before it hands them to the feed."""
TICK: Final = 5.0
"""How often, in seconds, the listener looks up: to see ``close()``, and that its socket
file is still there (it binds a new one if it is not)."""
_BIND_ATTEMPTS: Final = 3
"""How often binding is tried when a closing store removes the empty directory meanwhile."""


def supported() -> bool:
    """Tell whether this platform has Unix sockets (Windows does not, for Python)."""
    return hasattr(socket, "AF_UNIX")


def directory_for(path: str) -> tuple[str, bool] | None:
    """Where the sockets of the stores on the SQLite file ``path`` live.

    Next to the file (``<file>.fluxo-wake``), where everyone who can write the
    database can write too. When that path is too long for a socket's, a short one
    in the temporary directory, named by a hash of the file's real path, which must
    be a directory of this user's that no one else can write (see :func:`trusted`).
    The directory is keyed by the real path, so links to one file share it.

    Returns:
        The directory and whether it is the private one in the temporary directory;
        ``None`` when neither fits in a socket's path.
    """
    real = os.path.realpath(path)
    beside = real + SUFFIX
    if _fits(beside):
        return beside, False
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:12]  # short enough for macOS's $TMPDIR
    uid = os.getuid() if hasattr(os, "getuid") else 0
    short = os.path.join(tempfile.gettempdir(), f"fluxo-wake-{uid}-{digest}")
    return (short, True) if _fits(short) else None


def _fits(directory: str) -> bool:
    return len(os.fsencode(directory)) + 1 + _NAME_MAX <= PATH_MAX


def trusted(directory: str, private: bool) -> bool:
    """Tell whether ``directory`` is a directory (not a link), and if ``private``, ours alone.

    The private one lives in a folder everyone may write (``/tmp``): somebody else
    could have made it first to read the run ids sent there, so it must belong to
    this user and be writable by nobody else.
    """
    try:
        found = os.lstat(directory)
    except OSError:
        return False
    if not stat.S_ISDIR(found.st_mode):
        return False
    if not private:
        return True
    owner = os.getuid() if hasattr(os, "getuid") else found.st_uid
    return found.st_uid == owner and not found.st_mode & 0o022


def payload(run_id: str | None) -> bytes:
    """The datagram that tells of a change of ``run_id`` (``None``: of runs unknown)."""
    if run_id is None:
        return ANY
    try:
        named = run_id.encode("utf-8")
    except UnicodeEncodeError:
        return ANY
    return b"r" + named if len(named) <= _ID_MAX else ANY


def run_of(datagram: bytes) -> str | None:
    """The run a datagram names; ``None`` for a change of runs unknown (or a datagram unknown)."""
    if datagram[:1] != b"r" or len(datagram) < 2:
        return None
    try:
        return datagram[1:].decode("utf-8")
    except UnicodeDecodeError:
        return None


class Nudges:
    """The nudges of one SQL store on a SQLite file: those it sends, and those it receives.

    Thread-safe. :meth:`send` works from the start (it makes no file: with no
    directory, nobody waits); :meth:`listen` binds this store's socket and starts
    its thread, on the first wait.

    Args:
        locate: returns the database file's path, ``None`` for a database with no
            file (so no nudges); may raise while the database cannot be asked
            (asked again later).
        on_nudge: called in the listener thread with each run another store
            changed, ``None`` for runs unknown. It must not send nudges.
    """

    def __init__(
        self, locate: Callable[[], str | None], on_nudge: Callable[[str | None], None]
    ) -> None:
        self._locate = locate
        self._on_nudge = on_nudge
        self._file: str | None = None
        self._where: tuple[str, bool] | None = None
        self._located = False
        self._lock = threading.Lock()
        """Guards listening: the socket, its thread, closing."""
        self._send_lock = threading.Lock()
        """Guards the sockets connected to the other stores', by file name."""
        self._peers: dict[str, socket.socket] = {}
        weakref.finalize(self, _close_all, self._peers)  # a store dropped without close()
        self._socket: socket.socket | None = None
        self._name: str | None = None
        self._inode = 0
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._refused = False
        self._closed = False

    @property
    def listening(self) -> bool:
        """Tell whether this store's socket is bound (its thread receives nudges)."""
        return self._socket is not None

    @property
    def path(self) -> str | None:
        """This store's socket file, while it listens."""
        where, name = self._where, self._name
        if where is None or name is None or self._socket is None:
            return None
        return os.path.join(where[0], name)

    def directory(self) -> tuple[str, bool] | None:
        """The directory of the sockets and whether it is private (see :func:`directory_for`)."""
        if not self._located:
            try:
                path = self._locate()
            except Exception as exc:
                logger.debug("cannot tell where the SQLite file is, for nudges: %s", exc)
                return None
            self._file = path
            self._where = None if path is None else directory_for(path)
            self._located = True
        return self._where

    # -- sending ----------------------------------------------------------------

    def send(self, run_id: str | None) -> None:
        """Tell every other store waiting on the file that ``run_id`` changed (None: runs unknown).

        Called after the commit. Never blocks, never raises.
        """
        where = self.directory()
        if where is None or self._closed:
            return
        directory, private = where
        try:
            if private and not trusted(directory, private):
                return
            names = os.listdir(directory)
        except OSError:
            return  # no directory: nobody waits
        datagram = payload(run_id)
        with self._send_lock:
            peers = self._peers
            own = self._name
            for name in names:
                if name == own or not _NAME.fullmatch(name):
                    continue
                peer = peers.get(name)
                try:
                    if peer is None:
                        peer = peers[name] = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                        peer.setblocking(False)
                        peer.connect(os.path.join(directory, name))
                        if private and not trusted(directory, private):
                            self._forget_peer(name)  # the folder changed hands meanwhile
                            continue
                    peer.send(datagram)
                except (BlockingIOError, InterruptedError):
                    pass  # its queue is full: the receiver will find it crowded
                except ConnectionRefusedError:
                    self._forget_peer(name)  # a socket nobody reads: its process died
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(directory, name))
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:  # macOS: its buffer is full
                        self._forget_peer(name)  # connected again next time
            if peers:
                for gone in peers.keys() - set(names):
                    self._forget_peer(gone)

    def _forget_peer(self, name: str) -> None:
        peer = self._peers.pop(name, None)
        if peer is not None:
            peer.close()

    # -- receiving --------------------------------------------------------------

    def listen(self) -> bool:
        """Bind this store's socket and start its thread, unless done. Idempotent and cheap.

        Returns whether nudges are received. Called before the waiter reads what
        it waits on, so a change committed after that read always nudges it.
        """
        if self._socket is not None:
            return True
        with self._lock:
            if self._socket is not None:
                return True
            if self._closed or self._refused:
                return False
            where = self.directory()
            if where is None or self._file is None or not os.path.exists(self._file):
                return False  # no file yet: nothing to nudge about, and no trace of a read
            try:
                self._bind(*where)
            except OSError as exc:
                self._refused = True  # not again: waiters poll, as they always could
                logger.debug(
                    "no nudges from other processes for the SQLite file (%s); waiters look "
                    "for their changes every poll_interval",
                    exc,
                )
                return False
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="fluxo-sqlite-nudges", daemon=True
            )
            self._thread.start()
            return True

    def _bind(self, directory: str, private: bool) -> None:
        """Make the directory unless it exists, and bind a new socket in it (under the lock)."""
        for attempt in range(_BIND_ATTEMPTS):
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory, 0o700)
            if not trusted(directory, private):
                if not os.path.lexists(directory) and attempt + 1 < _BIND_ATTEMPTS:
                    continue  # a closing store removed the empty directory meanwhile
                raise PermissionError(
                    f"{directory} is not a directory of this user's that only it can write"
                )
            name = f"{os.getpid()}-{secrets.token_hex(4)}.sock"
            path = os.path.join(directory, name)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(path)
                sock.setblocking(False)
                self._inode = os.stat(path).st_ino
            except FileNotFoundError:
                sock.close()
                if attempt + 1 == _BIND_ATTEMPTS:
                    raise
                continue  # a closing store removed the empty directory meanwhile
            except BaseException:
                sock.close()
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise
            self._socket, self._name, self._pid = sock, name, os.getpid()
            return

    def _run(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                watched: socket.socket | None = None
                while not self._stopping.is_set():
                    sock = self._socket
                    if sock is None:
                        return
                    if sock is not watched:
                        if watched is not None:
                            selector.unregister(watched)
                        selector.register(sock, selectors.EVENT_READ)
                        watched = sock
                    if selector.select(TICK):
                        self._receive(sock)
                    elif not self._still_bound():
                        selector.unregister(sock)
                        watched = None
                        self._rebind(sock)
        except Exception as exc:
            logger.warning(
                "receiving nudges for the SQLite file failed (%s); waiters look for changes "
                "every poll_interval",
                exc,
            )
            with self._lock:
                self._refused = True
                self._release()

    def _receive(self, sock: socket.socket) -> None:
        """Take the datagrams waiting and wake the waiters they concern."""
        runs: dict[str | None, None] = {}
        count = 0
        while count < _BATCH:
            try:
                datagram = sock.recv(_RECEIVE_MAX)
            except (BlockingIOError, InterruptedError):
                break
            count += 1
            runs[run_of(datagram)] = None
        if self._stopping.is_set():
            return
        if count >= CROWDED or None in runs:
            self._on_nudge(None)  # a nudge may have been dropped: every waiter looks
        else:
            for run_id in runs:
                self._on_nudge(run_id)

    def _still_bound(self) -> bool:
        """Tell whether our socket file is still there (a cleaner or a person may remove it)."""
        path = self.path
        try:
            return path is not None and os.stat(path).st_ino == self._inode
        except OSError:
            return False

    def _rebind(self, old: socket.socket) -> None:
        with self._lock:
            if self._stopping.is_set() or self._socket is not old:
                return
            where = self._where
            self._release(unlink=False)  # the file is gone, or is somebody else's now
            if where is not None:
                try:
                    self._bind(*where)
                    logger.debug("the nudge socket was removed; bound a new one")
                except OSError as exc:
                    self._refused = True
                    logger.debug("cannot bind a new nudge socket: %s", exc)

    def _release(self, *, unlink: bool = True) -> None:
        """Close our socket and remove its file (under the lock)."""
        sock, self._socket = self._socket, None
        name, self._name = self._name, None
        if sock is None:
            return
        sock.close()
        where = self._where
        if unlink and where is not None and name is not None and self._pid == os.getpid():
            directory, _private = where
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
            # Only when no other store's socket is left in it. Somebody else may then
            # make the private one first: it fails trusted(), so stores poll, and
            # tell it nothing.
            with contextlib.suppress(OSError):
                os.rmdir(directory)

    def close(self) -> None:
        """Stop receiving, remove this store's socket file, close the sockets. Idempotent."""
        with self._lock:
            self._closed = True
            self._stopping.set()
            thread, path = self._thread, self.path
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            if path is not None:
                with (
                    contextlib.suppress(OSError),
                    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as waker,
                ):
                    waker.setblocking(False)
                    waker.sendto(ANY, path)  # wakes the thread at once
            thread.join(TICK + 1)
        with self._lock:
            self._release()
        with self._send_lock:
            for name in list(self._peers):
                self._forget_peer(name)

    def forget_after_fork(self) -> None:
        """In a forked child: the thread stayed in the parent, and the socket file is the parent's.

        The child's copies of the sockets are closed (the parent's stay open); the
        child binds a socket of its own when it first waits.
        """
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._thread = None
        self._stopping = threading.Event()
        sock, self._socket, self._name = self._socket, None, None
        if sock is not None:
            sock.close()
        _close_all(self._peers)


def _close_all(peers: dict[str, socket.socket]) -> None:
    for peer in peers.values():
        peer.close()
    peers.clear()
