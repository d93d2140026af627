"""`zai-proxy admin` (zai_proxy/switch/admin_client.py) against an httpx.MockTransport: what it
sends, what it prints, how it exits (BRIEF contract 3)."""

from __future__ import annotations

import io
import json

import httpx
import pytest

from zai_proxy import cli
from zai_proxy.switch import admin_client

KEY = "admin-key-for-tests-7d2e"


class Seen:
    def __init__(self, status: int = 200, body: object = None) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status
        self.body = {"retired": True} if body is None else body

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.body)


def call(argv: list[str], env: dict[str, str], handler: object, stdin: str = ""
         ) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    transport = None if handler is None else httpx.MockTransport(handler)  # type: ignore[arg-type]
    code = admin_client.run(argv, env, stdin=io.StringIO(stdin), stdout=out, stderr=err,
                            transport=transport)
    return code, out.getvalue(), err.getvalue()


def test_calls_localhost_port_with_the_key_and_prints_the_body() -> None:
    seen = Seen()
    code, out, err = call(["post", "/admin/retire"], {"ADMIN_API_KEY": KEY, "PORT": "9123"}, seen)
    assert (code, err) == (0, "")
    assert json.loads(out) == {"retired": True}
    request = seen.requests[0]
    assert request.method == "POST" and str(request.url) == "http://127.0.0.1:9123/admin/retire"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.content == b""


def test_data_from_stdin_is_sent_as_json() -> None:
    seen = Seen(body={"applied": {}})
    document = '{"version": 1, "account": "x"}'
    code, _, _ = call(["PUT", "/admin/limiter-state", "--data", "-"], {"ADMIN_API_KEY": KEY},
                      seen, stdin=document)
    assert code == 0
    request = seen.requests[0]
    assert str(request.url) == "http://127.0.0.1:8080/admin/limiter-state"  # PORT's default
    assert request.content == document.encode()
    assert request.headers["content-type"] == "application/json"


def test_error_status_exits_1_with_the_body_and_a_summary() -> None:
    body = {"error": {"message": "limiter state belongs to another Z.AI account",
                      "type": "invalid_request_error", "param": None,
                      "code": "proxy_account_mismatch"}}
    code, out, err = call(["PUT", "/admin/limiter-state", "--data", "{}", "--url",
                           "http://pod:1/"], {"ADMIN_API_KEY": KEY}, Seen(409, body))
    assert code == 1
    assert json.loads(out) == body
    assert err == ("zai-proxy admin: HTTP 409 proxy_account_mismatch: limiter state belongs "
                   "to another Z.AI account\n")


def test_without_a_key_nothing_is_called() -> None:
    seen = Seen()
    code, out, err = call(["GET", "/admin/limiter-state"], {"PORT": "1"}, seen)
    assert code == 1 and out == "" and seen.requests == []
    assert admin_client.NO_KEY in err


def test_unreachable_proxy_never_prints_the_key() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    code, out, err = call(["GET", "/admin/limiter-state"], {"ADMIN_API_KEY": KEY}, refuse)
    assert code == 1 and out == ""
    assert err.startswith("zai-proxy admin: cannot reach http://127.0.0.1:8080: ConnectError")
    assert KEY not in err


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["PATCH", "/admin/retire"], {"ADMIN_API_KEY": KEY}),
        (["GET"], {"ADMIN_API_KEY": KEY}),
    ],
)
def test_usage_errors_exit_2(argv: list[str], env: dict[str, str],
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert call(argv, env, Seen())[0] == 2


def test_bad_path_and_port_exit_1() -> None:
    assert call(["GET", "admin/x"], {"ADMIN_API_KEY": KEY}, Seen())[0] == 1
    code, _, err = call(["GET", "/admin/x"], {"ADMIN_API_KEY": KEY, "PORT": "80a"}, Seen())
    assert code == 1 and "PORT is not a port number" in err


def test_registered_as_a_cli_command() -> None:
    assert cli.COMMANDS["admin"][0] == "zai_proxy.switch.admin_client"
