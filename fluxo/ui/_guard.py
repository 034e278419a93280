"""Who may see the dashboard and act through it: the token, the host check, the CSRF check.

* **Token.** With a token, every request must carry it: as ``Authorization: Bearer``,
  or as the cookie that opening any page with ``?token=...`` sets (the browser is
  then sent to the same page without it, so the token stays out of its history).
* **Host.** Served alone on a loopback address without a token, the dashboard only
  answers requests addressed to a loopback name, so a web page elsewhere cannot
  reach it by pointing its own host name at 127.0.0.1 (DNS rebinding).
* **Cross-site requests.** Every form carries a random value that is also kept in
  a cookie of the dashboard's (``SameSite=Strict``); a POST whose two values differ,
  or whose ``Origin`` is another site's, is refused before anything happens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from urllib.parse import quote, urlencode, urlsplit

from fluxo.ui import _http

TOKEN_COOKIE = "fluxo_ui_token"
CSRF_COOKIE = "fluxo_ui_csrf"
CSRF_FIELD = "csrf"

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
"""The host names a loopback-only dashboard answers to (any port)."""


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _host_name(host: str) -> str:
    """``example.org:8080`` -> ``example.org``; ``[::1]:80`` -> ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _authority(value: str, scheme: str = "") -> str:
    """An origin's or a Host header's ``host:port``, with the scheme's default port left out."""
    if "://" in value:
        parts = urlsplit(value)
        scheme, value = parts.scheme, parts.netloc
    value = value.strip().lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    return value[: -len(default)] if default and value.endswith(default) else value


def cookie(name: str, value: str, request: _http.Request, *, max_age: int | None = None) -> str:
    """A ``Set-Cookie`` value scoped to the dashboard's path, unreadable by scripts."""
    parts = [f"{name}={value}", f"Path={request.base or '/'}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if request.headers.get("x-forwarded-proto") == "https":
        parts.append("Secure")
    return "; ".join(parts)


class Guard:
    """The checks of one dashboard, made on every request before any page runs."""

    def __init__(self, *, token: str | None, allowed_hosts: Collection[str] | None) -> None:
        self.token = token
        # Cookies are not kept per port: two dashboards of one host, each with its own
        # token, keep a cookie each.
        digest = hashlib.sha256(token.encode()).hexdigest()[:10] if token else ""
        self.token_cookie = f"{TOKEN_COOKIE}_{digest}"
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )

    def admit(self, request: _http.Request) -> _http.Response | None:
        """``None`` when the request may go on, else the refusal to send instead."""
        if self.allowed_hosts is not None:
            host = _host_name(request.headers.get("host", ""))
            if host not in self.allowed_hosts:
                return _http.Response.text(
                    f"this dashboard answers to {', '.join(sorted(self.allowed_hosts))} only; "
                    f"open it at http://127.0.0.1:<port>/ (the request named host {host!r})",
                    421,
                )
        if self.token is None:
            return None
        given = request.arg("token")
        if given and request.method == "GET":
            if not _same(given, self.token):
                return self._unauthorized("the token in the address is not this dashboard's")
            kept = {k: v for k, v in request.query.items() if k != "token"}
            query = urlencode(kept, doseq=True)
            # One leading slash: browsers read //host and /\host as another site's address.
            path = quote("/" + request.path.lstrip("/\\"))
            reply = _http.Response.redirect(request.base + path + ("?" + query if query else ""))
            reply.headers.append(("set-cookie", cookie(self.token_cookie, self.token, request)))
            return reply
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and _same(bearer[7:].strip(), self.token):
            return None
        kept_token = request.cookies.get(self.token_cookie, "")
        if kept_token and _same(kept_token, self.token):
            return None
        return self._unauthorized("this dashboard needs its token")

    @staticmethod
    def _unauthorized(why: str) -> _http.Response:
        return _http.Response.text(
            f"{why}: open it once as http://<host>:<port>/?token=<token> (the token that "
            "`fluxo ui` was given with --token or FLUXO_UI_TOKEN), or send "
            "'Authorization: Bearer <token>'",
            401,
        )


def csrf_value(request: _http.Request) -> tuple[str, str | None]:
    """The form value for this page, and the ``Set-Cookie`` to send when it is new."""
    kept = request.cookies.get(CSRF_COOKIE, "")
    if len(kept) >= 32 and kept.isascii() and kept.replace("-", "").replace("_", "").isalnum():
        return kept, None
    fresh = secrets.token_urlsafe(32)
    return fresh, cookie(CSRF_COOKIE, fresh, request)


def check_post(request: _http.Request, form: dict[str, str]) -> str | None:
    """Why a POST is refused as cross-site, or ``None`` when it is the dashboard's own."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        if _authority(origin) != _authority(
            request.headers.get("host", ""), urlsplit(origin).scheme
        ):
            return f"the request came from another site ({origin})"
    elif origin == "null":
        return "the request came from an opaque origin"
    if request.headers.get("sec-fetch-site") == "cross-site":
        return "the request came from another site"
    kept = request.cookies.get(CSRF_COOKIE, "")
    given = form.get(CSRF_FIELD, "")
    if not kept or not given or not _same(given, kept):
        return "its form token is missing or stale"
    return None
