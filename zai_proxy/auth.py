"""Client authentication: which proxy key a request presents, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from zai_proxy.errors import Unauthorized
from zai_proxy.headers import RawHeaders


def presented_key(headers: RawHeaders) -> str | None:
    """The key from `Authorization: Bearer K` or `x-api-key: K`, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


class ClientAuth:
    """Checks client keys; open (every request passes) when no key is configured."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        # Compare digests so the comparison time depends on neither key length nor content.
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    @property
    def open(self) -> bool:
        return not self._digests

    def client_id(self, headers: RawHeaders) -> str | None:
        """The client identity: a short key fingerprint, or None on an open proxy.

        Raises Unauthorized when keys are configured and none matches.
        """
        if not self._digests:
            return None
        key = presented_key(headers)
        if key is None:
            raise Unauthorized("missing API key: send Authorization: Bearer <key> or x-api-key")
        digest = hashlib.sha256(key.encode()).digest()
        matched = False
        for known in self._digests:  # no early exit: time does not reveal which key matched
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise Unauthorized("invalid API key")
        return "key-" + digest.hex()[:12]
