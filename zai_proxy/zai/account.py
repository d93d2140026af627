"""The Z.AI account a proxy spends, named without ever naming its key.

Z.AI's rate ceilings and plan quota belong to the account (the API key at one upstream), not to a
process or a deployment variant: every replica of v1 and v2 that holds the same key shares them.
`account_id` is the one name for that account (learned-state files, Redis keys, admin documents);
it is a salted hash, so it can be shown, logged and stored where the key must never go.
`Account` is one such account as the proxy spends it: the key, the upstream bases it is spent at,
and its id; the unit a second upstream account would be another instance of.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

KeyKind = Literal["standard", "coding"]

_SALT = b"zai-proxy-account-v1\0"


def normalized_base(base_url: str) -> str:
    """`scheme://host[:port]/path` with the host lower-cased and no trailing slash."""
    parts = urlsplit(base_url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def account_id(api_key: str, base_url: str) -> str:
    """16 hex digits naming (key, upstream base); equal inputs give equal ids everywhere."""
    digest = hashlib.sha256(_SALT + api_key.encode() + b"\0" + normalized_base(base_url).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Account:
    """One Z.AI account: its key (never in repr, str or logs), the OpenAI- and Anthropic-
    compatible bases it is spent at, and the quota monitor's base."""

    key: str = field(repr=False)
    openai_base: str
    anthropic_base: str
    monitor_url: str

    @property
    def id(self) -> str:
        """`account_id` of the key at the OpenAI base: the name shown, logged and stored."""
        return account_id(self.key, self.openai_base)

    @property
    def key_kind(self) -> KeyKind | None:
        """The key's kind as its OpenAI base tells it: a Coding Plan key is spent at
        `/api/coding/paas/v4`, a standard one at `/api/paas/v4`; None for any other base."""
        path = urlsplit(self.openai_base).path.rstrip("/")
        if path.endswith("/api/coding/paas/v4"):
            return "coding"
        if path.endswith("/api/paas/v4"):
            return "standard"
        return None

    def __str__(self) -> str:
        return f"account {self.id}"
