"""The Z.AI account a proxy spends, named without ever naming its key.

Z.AI's rate ceilings and plan quota belong to the account (the API key at one upstream), not to a
process or a deployment variant: every replica of v1 and v2 that holds the same key shares them.
`account_id` is the one name for that account (learned-state files, Redis keys, admin documents);
it is a salted hash, so it can be shown, logged and stored where the key must never go.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

_SALT = b"zai-proxy-account-v1\0"


def normalized_base(base_url: str) -> str:
    """`scheme://host[:port]/path` with the host lower-cased and no trailing slash."""
    parts = urlsplit(base_url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def account_id(api_key: str, base_url: str) -> str:
    """16 hex digits naming (key, upstream base); equal inputs give equal ids everywhere."""
    digest = hashlib.sha256(_SALT + api_key.encode() + b"\0" + normalized_base(base_url).encode())
    return digest.hexdigest()[:16]
