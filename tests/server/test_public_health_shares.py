"""Public /health names no client in the fleet's shares either (the per-client parts need the
admin key, like the queue's clients)."""

from __future__ import annotations

from zai_proxy.server.app import _public_health


def test_the_fleets_per_client_parts_are_left_out_of_public_health() -> None:
    shares = {"scope": "account", "replicas_reporting": 2, "paced": {"secret-team": 0.5},
              "in_flight_caps": {"secret-team": 3}}
    public = _public_health({"rate_limit": {"shares": shares}}, "")
    assert public == {"rate_limit": {"shares": {"scope": "account", "replicas_reporting": 2}}}
