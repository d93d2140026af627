"""Where the relay sends a request, and what it shows the client.

`Outbound` is one upstream account as the relay sees it: the account whose key the request
carries, the router to that account's bases, and the forwarder through that account's admission
gate. `ClientFacing` is what the handler answers or enforces on the client's side without asking
anyone: the variant it stamps, the request size limit, the model list it serves itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from zai_proxy.relay.forwarding import Forwarder
from zai_proxy.wire.routing import Router
from zai_proxy.zai.account import Account


@dataclass(frozen=True, slots=True)
class Outbound:
    """One account's way upstream."""

    account: Account
    router: Router
    forwarder: Forwarder


@dataclass(frozen=True, slots=True)
class ClientFacing:
    """The handler's own answers and bounds."""

    variant: str  # the x-zai-proxy-variant stamp
    max_request_bytes: int
    models_body: bytes | None = None  # /v1/models answered locally when set
