"""``fluxo ui``: serve the dashboard (``fluxo.ui``) over HTTP, on 127.0.0.1 by default.

Any other address needs a token (``--token`` or ``FLUXO_UI_TOKEN``), and every request
must then carry it. The server is uvicorn, from the ``fluxo[ui]`` extra.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import signal
import socket
from types import FrameType

import click

from fluxo import _cli_apps

APP_ENV = "FLUXO_APP"
STORE_ENV = "FLUXO_STORE_URL"
TOKEN_ENV = "FLUXO_UI_TOKEN"


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` (an address or ``localhost``) only reaches this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("ui")
@click.option(
    "--app",
    envvar=APP_ENV,
    show_envvar=True,
    metavar="APP",
    help="Your engine, as 'module:attribute': its codec decodes the payloads shown.",
)
@click.option(
    "--store",
    envvar=STORE_ENV,
    show_envvar=True,
    metavar="URL",
    help="The store URL; wins over the app's own store.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to bind.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    show_envvar=True,
    help="Require this token on every request; needed to bind a non-loopback address.",
)
def ui(app: str | None, store: str | None, host: str, port: int, token: str | None) -> None:
    """Serve the dashboard: runs, their histories as timelines, signal, cancel and retry.

    It binds 127.0.0.1 unless --host says otherwise; another address needs --token
    (or FLUXO_UI_TOKEN), and the browser opens it once as http://HOST:PORT/?token=TOKEN.
    """
    if not is_loopback(host) and not token:
        raise click.UsageError(
            f"--host {host} is reachable from other machines: give a token too "
            f"(--token or {TOKEN_ENV}; for example "
            f"{TOKEN_ENV}={secrets.token_urlsafe(24)}), or bind 127.0.0.1"
        )
    try:
        import uvicorn
    except ImportError:
        raise _cli_apps.CLIError(
            "`fluxo ui` needs the uvicorn server: pip install 'fluxo[ui]'"
        ) from None
    from fluxo import ui as dashboard_module

    with _cli_apps.connect(store, app) as engine:
        shown = f"[{host.strip('[]')}]" if ":" in host else host
        dashboard = dashboard_module.Dashboard(
            engine,
            token=token,  # the address bound is a loopback name too (127.0.0.2, [::1])
            allowed_hosts=None if token else dashboard_module.LOOPBACK_HOSTS | {shown.lower()},
        )
        sock = _bind(host, port)
        address = f"http://{shown}:{sock.getsockname()[1]}/"
        click.echo(f"fluxo ui: serving {address}" + ("?token=<your token>" if token else ""))
        config = uvicorn.Config(
            dashboard.asgi,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )

        class Server(uvicorn.Server):
            async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
                dashboard.close()  # open pages' live streams end, so they hold no shutdown
                await super().shutdown(sockets)

        server = Server(config)
        # uvicorn raises the signal that stopped it again once it has stopped; a handler
        # of ours takes it, so the dashboard and the store are closed before the exit.
        previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            dashboard.close()
            sock.close()
        logging.getLogger(__name__).info("fluxo ui stopped")


def _stopped(signum: int, frame: FrameType | None) -> None:
    """Take the stopping signal uvicorn raises again after it stopped: the exit is ours."""


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise _cli_apps.CLIError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
