"""The dashboard's requests and responses, and the two ways servers call it: WSGI and ASGI.

The pages are written once, against :class:`Request` and :class:`Response`. A WSGI
server (Flask, Django, gunicorn) calls :func:`wsgi_call`; an ASGI server (uvicorn,
FastAPI, Starlette) calls :func:`asgi_call`, which runs the page in a thread of the
dashboard's own, since reading the store blocks. The one response that does not
end at once, the live-refresh stream, is a :class:`Stream`, which each side waits
on in its own way: a WSGI thread blocks, an ASGI task awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http
import io
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode

MAX_BODY = 1 << 20
"""The largest request body read (1 MiB): a signal's payload fits, a flood does not."""


class BodyTooLarge(Exception):
    """The request body is over :data:`MAX_BODY`."""


@dataclass(frozen=True)
class Request:
    """One request, as the pages see it, whichever server brought it.

    ``path`` is the path inside the dashboard (``/`` is its home), ``base`` the
    prefix it is mounted under (``""`` when served alone), so links are
    ``base + path``.
    """

    method: str
    path: str
    base: str = ""
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def arg(self, name: str, default: str = "") -> str:
        """The first value of query argument ``name``."""
        values = self.query.get(name)
        return values[0] if values else default

    def args(self, name: str) -> list[str]:
        """Every value of query argument ``name``, in order."""
        return list(self.query.get(name, ()))

    def form(self) -> dict[str, str]:
        """The fields of a URL-encoded form body (the first value of each)."""
        if not self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return {}
        try:
            text = self.body.decode()
        except UnicodeDecodeError:
            return {}
        return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}

    @property
    def cookies(self) -> dict[str, str]:
        """The request's cookies (a malformed header gives none)."""
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except CookieError:
            return {}
        return {key: morsel.value for key, morsel in jar.items()}

    def url(self, path: str, **query: Any) -> str:
        """A link to ``path`` inside the dashboard, with ``query`` (empty values left out)."""
        kept = {k: v for k, v in query.items() if v}
        return self.base + path + ("?" + urlencode(kept, doseq=True) if kept else "")


@dataclass
class Response:
    """What a page answers: a status, headers and a body."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def html(cls, text: str, status: int = 200) -> Response:
        """An HTML page."""
        return cls(status, text.encode(), [("content-type", "text/html; charset=utf-8")])

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Response:
        """A JSON document."""
        body = json.dumps(value, ensure_ascii=False).encode()
        return cls(status, body, [("content-type", "application/json")])

    @classmethod
    def text(cls, text: str, status: int) -> Response:
        """Plain text, for the answers that carry no page (refusals)."""
        return cls(status, text.encode(), [("content-type", "text/plain; charset=utf-8")])

    @classmethod
    def redirect(cls, location: str) -> Response:
        """A ``303 See Other`` to ``location`` (after a form, the page to show)."""
        return cls(303, b"", [("location", location)])


class Stream(Protocol):
    """A response whose body is written as things happen: Server-Sent Events."""

    status: int
    headers: list[tuple[str, str]]

    def chunks(self) -> Iterator[bytes]:
        """The body, blocking between chunks (WSGI)."""
        ...

    def achunks(self) -> Any:
        """The body as an async iterator of bytes, awaiting between chunks (ASGI)."""
        ...


Handler = Callable[[Request], "Response | Stream"]

COMPRESS_OVER = 32 * 1024
"""Bodies larger than this go gzipped to a client that takes it (a long run page: a
history of 5,000 events is megabytes of HTML, a twentieth of that once compressed)."""


def compressed(reply: Response, request: Request) -> Response:
    """``reply`` gzipped when it is large, of text, and the client accepts gzip."""
    if len(reply.body) <= COMPRESS_OVER or "gzip" not in request.headers.get("accept-encoding", ""):
        return reply
    names = {name for name, _ in reply.headers}
    kind = next((value for name, value in reply.headers if name == "content-type"), "")
    if "content-encoding" in names or not kind.startswith(("text/", "application/json")):
        return reply
    body = gzip.compress(reply.body, compresslevel=4)
    headers = [*reply.headers, ("content-encoding", "gzip"), ("vary", "accept-encoding")]
    return Response(reply.status, body, headers)


# -- WSGI ------------------------------------------------------------------------------------


def _wsgi_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    return headers


def _read_body(stream: Any, length: int) -> bytes:
    if length > MAX_BODY:
        raise BodyTooLarge
    data = stream.read(length) if length > 0 else b""
    return bytes(data)


def wsgi_request(environ: Mapping[str, Any]) -> Request:
    """The :class:`Request` a WSGI ``environ`` describes."""
    headers = _wsgi_headers(environ)
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError:
        length = 0
    body = _read_body(environ.get("wsgi.input") or io.BytesIO(), length)
    path = _latin1_to_text(str(environ.get("PATH_INFO") or "/"))
    return Request(
        method=str(environ.get("REQUEST_METHOD", "GET")).upper(),
        path=path or "/",
        base=_latin1_to_text(str(environ.get("SCRIPT_NAME") or "")).rstrip("/"),
        query=parse_qs(str(environ.get("QUERY_STRING") or ""), keep_blank_values=True),
        headers=headers,
        body=body,
    )


def _latin1_to_text(value: str) -> str:
    """PEP 3333 hands paths over as latin-1 decoded bytes; read them as UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _status_line(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def wsgi_call(
    handler: Handler, environ: MutableMapping[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """Answer one WSGI request with ``handler``."""
    try:
        request = wsgi_request(environ)
    except BodyTooLarge:
        reply: Response | Stream = Response.text("request body too large", 413)
    else:
        reply = handler(request)
    start_response(_status_line(reply.status), list(reply.headers))
    if isinstance(reply, Response):
        return [reply.body]
    return reply.chunks()


# -- ASGI ------------------------------------------------------------------------------------

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def _asgi_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def asgi_request(scope: Mapping[str, Any], body: bytes) -> Request:
    """The :class:`Request` an ASGI ``scope`` describes."""
    headers: dict[str, str] = {}
    for raw_key, raw_value in scope.get("headers", ()):
        key = raw_key.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[key] = f"{headers[key]}; {value}" if key == "cookie" and key in headers else value
    root = str(scope.get("root_path") or "")
    path = str(scope.get("path") or "/")
    if root and path.startswith(root):  # Starlette's Mount leaves the prefix in ``path``
        path = path[len(root) :]
    return Request(
        method=str(scope.get("method", "GET")).upper(),
        path=path or "/",
        base=root.rstrip("/"),
        query=parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"), True),
        headers=headers,
        body=body,
    )


async def asgi_call(
    handler: Handler,
    executor: Executor,
    scope: MutableMapping[str, Any],
    receive: Receive,
    send: Send,
) -> None:
    """Answer one ASGI HTTP request with ``handler``, run in ``executor``."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        raise RuntimeError(f"the Fluxo dashboard serves HTTP, not {scope['type']!r}")
    try:
        body = await _asgi_body(receive)
    except BodyTooLarge:
        reply: Response | Stream = Response.text("request body too large", 413)
    else:
        request = asgi_request(scope, body)
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(executor, handler, request)
    raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
    if isinstance(reply, Response):
        await send({"type": "http.response.body", "body": reply.body})
        return
    await _stream(reply, receive, send)


async def _stream(reply: Stream, receive: Receive, send: Send) -> None:
    """Send a stream's chunks until it ends or the client goes away, whichever is first.

    The stream waits between chunks (for a change, or up to a keep-alive ping), so the
    client's going away is watched beside it: a closed page frees its stream at once.
    """

    async def until_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    gone = asyncio.ensure_future(until_gone())
    chunks = reply.achunks()
    following: asyncio.Future[bytes] | None = None
    try:
        while True:
            following = asyncio.ensure_future(chunks.__anext__())
            await asyncio.wait({following, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                return
            try:
                chunk = following.result()
            except StopAsyncIteration:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        # The page went away, or the server cancelled this task (its shutdown, a
        # framework's task group): the stream's wait is ended before the stream is closed.
        if following is not None:  # a no-op once it is done; its error, if any, is raised
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        await chunks.aclose()


async def _lifespan(receive: Receive, send: Send) -> None:
    """Served alone, the dashboard has nothing to start or stop with the server."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
