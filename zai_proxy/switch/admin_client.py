"""`zai-proxy admin METHOD PATH [--data -]`: call this pod's own admin API from inside the pod.

The switch reaches a pod's `/admin/*` routes with `kubectl exec POD -c zai-proxy -i --
zai-proxy admin METHOD PATH [--data -]`: the API server's pod proxy strips `Authorization` and a
key in a URL would land in API-server logs, so the key never leaves the pod. This command reads
`ADMIN_API_KEY` and `PORT` from the environment (the container's own), calls
`http://127.0.0.1:$PORT<PATH>` with `Authorization: Bearer <key>`, prints the response body to
stdout, and exits 0 on a 2xx answer, 1 otherwise. On 1 it writes one line to stderr the switch
can read: `zai-proxy admin: HTTP <status> <code>: <message>` for an answer, or
`zai-proxy admin: <what went wrong>` when there was none. Exit 2 is a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import IO

import httpx

PREFIX = "zai-proxy admin"
METHODS = ("GET", "POST", "PUT", "DELETE")
NO_KEY = "ADMIN_API_KEY is not set in this environment (admin routes are off)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PREFIX,
        description="Call this proxy's admin API on 127.0.0.1:$PORT with $ADMIN_API_KEY; "
        "prints the body, exits 0 on 2xx and 1 otherwise.",
        epilog="example: kubectl exec POD -c zai-proxy -i -- zai-proxy admin GET "
        "/admin/limiter-state",
    )
    parser.add_argument("method", type=str.upper, choices=METHODS)
    parser.add_argument("path", help="an /admin/... path")
    parser.add_argument("--data", help="request body; '-' reads it from stdin")
    parser.add_argument("--url", help="base URL instead of http://127.0.0.1:$PORT (tests)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    return parser


def error_summary(status: int, body: bytes) -> str:
    """`HTTP 409 proxy_account_mismatch: message` from an OpenAI-shaped error body."""
    try:
        error = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    code = error.get("code") or "-"
    message = error.get("message") or body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status} {code}: {message}"


def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stdin: IO[str],
    stdout: IO[str],
    stderr: IO[str],
    transport: httpx.BaseTransport | None = None,
) -> int:
    """The command, with its environment and streams passed in (tests inject a transport)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return 2 if exc.code else 0

    def fail(message: str) -> int:
        print(f"{PREFIX}: {message}", file=stderr)
        return 1

    if not args.path.startswith("/"):
        return fail(f"PATH must start with '/', got {args.path!r}")
    key = env.get("ADMIN_API_KEY", "")
    if not key:
        return fail(NO_KEY)
    if args.url:
        base = args.url.rstrip("/")
    else:
        port = env.get("PORT", "8080") or "8080"
        if not port.isdigit():
            return fail(f"PORT is not a port number: {port!r}")
        base = f"http://127.0.0.1:{port}"
    body = stdin.read() if args.data == "-" else args.data
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        with httpx.Client(transport=transport, timeout=args.timeout) as client:
            response = client.request(
                args.method, base + args.path, headers=headers,
                content=None if body is None else body.encode())
    except httpx.HTTPError as exc:
        # Never echo the headers: the key is in them.
        return fail(f"cannot reach {base}: {type(exc).__name__}: {exc}")
    stdout.write(response.text)
    if response.text and not response.text.endswith("\n"):
        stdout.write("\n")
    if response.is_success:
        return 0
    return fail(error_summary(response.status_code, response.content))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `zai-proxy admin`."""
    return run(list(sys.argv[1:] if argv is None else argv), os.environ,
               stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr)
