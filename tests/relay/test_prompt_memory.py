"""The memory of request bodies refused as overloaded: bounded in entries and age, on an
injected clock."""

from __future__ import annotations

import pytest

from tests.support.clock import VirtualTime
from zai_proxy.relay.prompt_memory import PromptMemory, digest

A, B, C = digest(b"POST", b"/a", b"{}"), digest(b"POST", b"/b", b"{}"), digest(b"x")


def test_a_body_is_new_once_then_remembered() -> None:
    memory = PromptMemory(clock=VirtualTime())
    assert memory.recall(A) is False
    assert memory.recall(A) is True
    assert memory.recall(B) is False


def test_a_body_is_forgotten_after_max_age_since_its_last_refusal() -> None:
    vt = VirtualTime()
    memory = PromptMemory(max_age=60.0, clock=vt)
    memory.recall(A)
    vt.jump(50)
    assert memory.recall(A) is True  # refused again: its age starts over
    vt.jump(50)
    assert memory.recall(A) is True
    vt.jump(61)
    assert memory.recall(A) is False


def test_old_entries_are_dropped_as_new_ones_come() -> None:
    vt = VirtualTime()
    memory = PromptMemory(max_age=60.0, clock=vt)
    memory.recall(A)
    vt.jump(61)
    memory.recall(B)
    assert len(memory) == 1


def test_the_least_recently_refused_body_goes_first_when_full() -> None:
    memory = PromptMemory(capacity=2, clock=VirtualTime())
    memory.recall(A)
    memory.recall(B)
    memory.recall(A)  # A is now the most recent
    memory.recall(C)  # B goes
    assert len(memory) == 2
    assert memory.recall(A) is True and memory.recall(B) is False


def test_the_digest_tells_its_parts_apart() -> None:
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
    assert len(digest(b"x" * 100_000)) == 16


def test_an_empty_memory_is_refused() -> None:
    with pytest.raises(ValueError):
        PromptMemory(capacity=0)
