"""The Prefect server of `lakehouse up`: Prefect's own app (what `prefect server start` serves), with its login
checked first.

Prefect checks a change's CSRF token before its login, so a POST without credentials would get 403; wrapped, every
API request without the right basic credentials gets 401, then Prefect applies its own checks (login included)."""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.config import Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = {"/api/health", "/api/ready"}  # probes, as Prefect itself leaves them open (GET only)


def prefect_home(settings: Settings) -> Path:
    """Where Prefect keeps its state for this data folder (database, settings)."""
    return Path(settings.data_dir).resolve() / "prefect"


def home_env(settings: Settings) -> dict[str, str]:
    """Prefect settings that keep its state in the project's data folder."""
    home = prefect_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": os.environ.get(
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"
        ),
    }


def auth_env(credentials: str) -> dict[str, str]:
    """The basic-auth string (`user:password`) for a Prefect server and for its clients."""
    return {"PREFECT_SERVER_API_AUTH_STRING": credentials, "PREFECT_API_AUTH_STRING": credentials}


class LoginFirst:
    """ASGI wrapper: an HTTP request under /api without the basic credentials `user:password` gets 401."""

    def __init__(self, app: ASGIApp, credentials: str) -> None:
        self.app = app
        self.credentials = credentials.encode()

    def _allowed(self, scope: Scope) -> bool:
        method = scope.get("method", "GET").upper()
        if method == "OPTIONS" or (method == "GET" and scope["path"] in OPEN_PATHS):
            return True  # a CORS preflight carries no credentials; the CORS middleware answers it
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return scheme.lower() == b"basic" and hmac.compare_digest(given, self.credentials)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api") and not self._allowed(scope):
            from starlette.responses import JSONResponse

            await JSONResponse({"exception_message": "Unauthorized"}, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def main(argv: list[str] | None = None) -> None:
    """Serve Prefect's API and UI on --host/--port; the login is PREFECT_SERVER_API_AUTH_STRING (required)."""
    import uvicorn
    from prefect.server.api.server import create_app
    from prefect.settings import get_current_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args(argv)
    settings = get_current_settings().server
    if settings.api.auth_string is None or not settings.api.auth_string.get_secret_value():
        raise SystemExit("error: PREFECT_SERVER_API_AUTH_STRING is unset: this server serves only behind a login")
    app = LoginFirst(create_app(final=True), settings.api.auth_string.get_secret_value())
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        timeout_keep_alive=settings.api.keepalive_timeout,
        ws_ping_interval=settings.api.websocket_ping_interval,
        ws_ping_timeout=settings.api.websocket_ping_timeout,
        log_level=str(settings.logging_level).lower(),
    )


if __name__ == "__main__":
    main()
