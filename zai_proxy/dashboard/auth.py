"""Optional login: with DASHBOARD_API_KEY set, the page and API need the key.

Accepted as `Authorization: Bearer KEY`, `?key=KEY` (EventSource cannot send headers), or the
cookie the login form sets. The cookie holds a hash of the key, not the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "zai_dashboard"
OPEN_PATHS = {"/healthz", "/login", "/favicon.ico"}


def cookie_value(key: str) -> str:
    return hashlib.sha256(f"zai-dashboard:{key}".encode()).hexdigest()


def authorized(request: Request, key: str) -> bool:
    header = request.headers.get("authorization", "")
    offered = [
        header[7:].strip() if header.lower().startswith("bearer ") else "",
        request.query_params.get("key", ""),
    ]
    if any(o and hmac.compare_digest(o.encode(), key.encode()) for o in offered):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie, cookie_value(key))


def login_page(error: str = "", status: int = 200) -> HTMLResponse:
    message = f'<p class="login-error">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>zai-proxy dashboard: sign in</title><link rel="stylesheet" href="/static/style.css"></head>
<body class="login"><form method="post" action="/login" class="login-box">
<h1>zai-proxy dashboard</h1>{message}
<label>API key <input type="password" name="key" autocomplete="current-password" autofocus></label>
<button type="submit">Sign in</button></form></body></html>"""
    return HTMLResponse(body, status_code=status)


async def login(request: Request, key: str) -> Response:
    """GET shows the form; POST checks the key and sets the cookie."""
    if request.method != "POST":
        return login_page()
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    offered = form.get("key", [""])[0]
    if not offered or not hmac.compare_digest(offered.encode(), key.encode()):
        return login_page("That key is not right.", 401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, cookie_value(key), httponly=True, samesite="strict",
                        max_age=30 * 86400)
    return response


class AuthMiddleware:
    """Pure ASGI (no buffering), so SSE streams pass through untouched."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.key is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        path = request.url.path
        if path == "/login":
            await (await login(request, self.key))(scope, receive, send)
            return
        if path in OPEN_PATHS or path.startswith("/static/") or authorized(request, self.key):
            await self.app(scope, receive, send)
            return
        response: Response
        if path.startswith("/api/"):
            response = JSONResponse({"error": "unauthorized: send the dashboard API key"}, 401,
                                    headers={"WWW-Authenticate": "Bearer"})
        else:
            response = RedirectResponse("/login", status_code=303)
        await response(scope, receive, send)
