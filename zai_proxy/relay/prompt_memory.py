"""The request bodies that drew a prompt-sensitive refusal lately (Z.AI's "overloaded" code that
has been seen coming back, whatever the rate, for one particular prompt).

The forwarder asks `recall` when such an answer arrives: the first time for a body it answers
False (the answer is read by its own row: a rate throttle), and remembers the body; while the
body is remembered it answers True (the answer is about the prompt, not the account's load:
the `OVERLOADED_PROMPT` row). So a prompt that always draws the code lowers the learned rate
once, not on every attempt of every request that sends it.

Pure and bounded: at most `capacity` bodies (the least recently refused go first), each
forgotten `max_age` seconds after its last refusal; the clock is injected. Bodies are kept as
digests, never as text: the memory holds no prompt.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_CAPACITY = 1024
DEFAULT_MAX_AGE = 900.0  # seconds


def digest(*parts: bytes) -> bytes:
    """The key a request is remembered by (its target and body); computed only when a
    prompt-sensitive answer arrives, never on the common path."""
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.digest()


class PromptMemory:
    """Digests of request bodies refused as overloaded, with when they last were."""

    __slots__ = ("_clock", "_seen", "capacity", "max_age")

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY, max_age: float = DEFAULT_MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or not max_age > 0:
            raise ValueError("a prompt memory needs room for one body and a positive age")
        self.capacity = capacity
        self.max_age = max_age
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def recall(self, key: bytes) -> bool:
        """Whether `key` drew a refusal within `max_age`; either way it is remembered as
        refused now (the refusal being reported)."""
        now = self._clock()
        seen = self._seen
        last = seen.pop(key, None)
        seen[key] = now
        while len(seen) > self.capacity:
            seen.popitem(last=False)
        # Oldest first: drop the ones past their age (the entry just made ends the loop).
        while now - next(iter(seen.values())) > self.max_age:
            seen.popitem(last=False)
        return last is not None and now - last <= self.max_age

    def __len__(self) -> int:
        return len(self._seen)
