"""The Fluxo dashboard inside a FastAPI app, behind the app's own dependency.

    DASHBOARD_PASSWORD=s3cret uvicorn ui_fastapi:app   # open http://127.0.0.1:8000/fluxo/ as admin

``python examples/ui_fastapi.py`` walks through it with an HTTP client of the app.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

import fluxo
from fluxo.contrib.fastapi import dashboard_router


@fluxo.step
def send_welcome(name: str) -> str:
    return f"welcome, {name}"


@fluxo.workflow
def onboard(name: str) -> str:
    return send_welcome(name)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with fluxo.AsyncEngine("sqlite:///ui_fastapi.db", workflows=[onboard]) as engine:
        app.state.fluxo = engine
        yield


def get_engine(request: Request) -> fluxo.AsyncEngine:
    engine: fluxo.AsyncEngine = request.app.state.fluxo
    return engine


PASSWORD = os.environ.get("DASHBOARD_PASSWORD") or secrets.token_urlsafe()  # unset: no way in
basic = HTTPBasic()


def require_admin(credentials: Annotated[HTTPBasicCredentials, Depends(basic)]) -> None:
    """The app's own guard: HTTP Basic, user ``admin``."""
    user_ok = secrets.compare_digest(credentials.username.encode(), b"admin")
    password_ok = secrets.compare_digest(credentials.password.encode(), PASSWORD.encode())
    if not (user_ok and password_ok):
        raise HTTPException(401, "who are you?", headers={"WWW-Authenticate": "Basic"})


app = FastAPI(lifespan=lifespan)
# --8<-- [start:mount]
dashboard = dashboard_router(get_engine, dependencies=[Depends(require_admin)])
app.include_router(dashboard, prefix="/fluxo")
# --8<-- [end:mount]


async def main() -> None:
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        await app.state.fluxo.run(onboard.options(id="onboard-ana"), "ana")
        refused = await client.get("/fluxo/")
        print(refused.status_code, refused.json())  # prints: 401 {'detail': 'Not authenticated'}
        wrong = await client.get("/fluxo/", auth=("admin", "guess"))
        print(wrong.status_code, wrong.json())  # prints: 401 {'detail': 'who are you?'}
        page = await client.get("/fluxo/", auth=("admin", PASSWORD))
        print(page.status_code, 'href="/fluxo/run?id=onboard-ana"' in page.text)  # prints: 200 True


if __name__ == "__main__":
    asyncio.run(main())
