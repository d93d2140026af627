"""Account-wide shares, the pure part: reports, the allocation, the correction, the meter and
the per-client gates."""

from __future__ import annotations

import json
import math

import pytest

from zai_proxy.limiter.client_class import DEFAULT, ClientClass
from zai_proxy.limiter.fleet_shares import (
    Balance,
    Demand,
    FleetParts,
    SendMeter,
    account_shares,
    allocate,
    cap_parts,
    decode,
    encode,
    local_demand,
)

HEAVY, LIGHT = Demand(3, "batch", 6), Demand(1, "batch", 3)


# -- reports ------------------------------------------------------------------------------------


def test_a_report_reads_back_as_written() -> None:
    report = {"agents": Demand(3.0, "interactive", 4, 2.5, 2), "ci": Demand(1.0, "batch", 0)}
    at, back = decode(encode(report, 1234.5))
    assert at == 1234.5 and back == report


@pytest.mark.parametrize("row", [
    [0, "batch", 1, 0, 0], [-1, "batch", 1, 0, 0], [float("nan"), "batch", 1, 0, 0],
    [True, "batch", 1, 0, 0], ["3", "batch", 1, 0, 0], [1, "urgent", 1, 0, 0],
    [1, "batch", -1, 0, 0], [1, "batch", 1.5, 0, 0], [1, "batch", True, 0, 0],
    [1, "batch", 1, -0.1, 0], [1, "batch", 1, float("inf"), 0], [1, "batch", 1, 0, -1],
    [1, "batch", 1, 0, 0.5], [1, "batch", 1, 0, False], [1, "batch", 1, 0],
    [1, "batch", 1, 0, 0, 9], {"weight": 1},
])
def test_a_report_with_a_bad_row_is_refused_whole(row: object) -> None:
    good = {"good": [1, "batch", 1, 0, 0]}
    assert decode(json.dumps({"at": 1.0, "clients": good}))[1] == {"good": Demand(1, "batch", 1)}
    text = json.dumps({"at": 1.0, "clients": {**good, "bad": row}})
    with pytest.raises(ValueError):
        decode(text)


@pytest.mark.parametrize("text", [
    "[]", "{}", '{"at": 1}', '{"at": 1, "clients": []}', '{"at": "1", "clients": {}}',
    '{"at": NaN, "clients": {}}', '{"clients": {}}', "not json",
])
def test_what_is_not_a_report_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode(text)


def test_local_demand_reports_each_waiting_client_once_in_its_highest_class() -> None:
    flows = [("a", "batch", 1.0, 2), ("b", "batch", 2.0, 1), ("a", "interactive", 1.0, 1)]
    report = local_demand(flows, {"a": 4, "b": 1}, {"a": 2.0}, {"a": 3}, lambda c: DEFAULT)
    assert report == {"a": Demand(1.0, "interactive", 4, 2.0, 3),
                      "b": Demand(2.0, "batch", 1, 0.0)}


def test_local_demand_reports_a_client_with_requests_upstream_and_none_waiting() -> None:
    klass = ClientClass(weight=2, priority="interactive", max_in_flight=4)
    report = local_demand([], {}, {"c": 1.5}, {"c": 4}, lambda c: klass)
    assert report == {"c": Demand(2.0, "interactive", 0, 1.5, 4)}


def test_a_cap_is_split_by_what_each_replica_wants_and_adds_up_to_the_cap() -> None:
    reports = {"r1": {"a": Demand(1, "batch", 4, 0, 2)},  # wants 6
               "r2": {"a": Demand(1, "batch", 1, 0, 1)},  # wants 2
               "r3": {"a": Demand(1, "batch", 0, 0, 0), "b": Demand(1, "batch", 1)}}
    parts = {r: cap_parts(reports, r, {"a": 7, "b": 2}) for r in reports}
    # 7 * 6/8 = 5.25 and 7 * 2/8 = 1.75: the larger remainder takes the seventh; b is wanted
    # on r3 alone: none of it elsewhere, the whole cap there (not named)
    assert parts == {"r1": {"a": 5, "b": 0}, "r2": {"a": 2, "b": 0}, "r3": {"a": 0}}
    assert sum(p["a"] for p in parts.values()) == 7
    assert cap_parts({"r1": {"a": Demand(1, "batch", 2, 0, 1)}}, "r1", {"a": 3}) == {}


def test_a_replica_over_its_new_part_drains_before_the_others_take_it_up() -> None:
    reports = {"r1": {"a": Demand(1, "batch", 0, 0, 4)}, "r2": {"a": Demand(1, "batch", 4)}}
    assert cap_parts(reports, "r1", {"a": 4}) == {"a": 2}
    assert cap_parts(reports, "r2", {"a": 4}) == {"a": 0}, "r1 still holds all four"


# -- the allocation -----------------------------------------------------------------------------


def test_no_parts_while_at_most_one_replica_has_work_waiting() -> None:
    assert allocate({"r1": {"heavy": HEAVY}}, "r1", 0.1) is None
    assert allocate({"r1": {"heavy": HEAVY}, "r2": {"light": Demand(1, "batch", 0)}},
                    "r1", 0.1) is None
    # busy elsewhere, not here: nothing of this replica's to pace
    assert allocate({"r1": {}, "r2": {"a": LIGHT}, "r3": {"b": LIGHT}}, "r1", 0.1) is None


def test_a_client_on_one_replica_gets_its_whole_share_there() -> None:
    reports = {"r1": {"heavy": HEAVY, "light1": LIGHT, "light2": LIGHT},
               "r2": {"light1": LIGHT, "light2": LIGHT}}
    one, two = allocate(reports, "r1", 0.1), allocate(reports, "r2", 0.1)
    assert one == pytest.approx({"heavy": 0.6, "light1": 0.1, "light2": 0.1})
    assert two == pytest.approx({"light1": 0.1, "light2": 0.1})


def test_a_client_waiting_on_two_replicas_is_split_by_what_waits_where() -> None:
    reports = {"r1": {"a": Demand(1, "batch", 3)}, "r2": {"a": Demand(1, "batch", 1),
                                                          "b": Demand(1, "batch", 5)}}
    assert allocate(reports, "r1", 0.1) == pytest.approx({"a": 0.375})
    assert allocate(reports, "r2", 0.1) == pytest.approx({"a": 0.125, "b": 0.5})


def test_interactive_goes_first_account_wide_and_batch_keeps_its_floor() -> None:
    reports = {"r1": {"agent": Demand(1, "interactive", 1)},
               "r2": {"bulk": Demand(1, "batch", 400), "ci": Demand(1, "batch", 100)}}
    assert allocate(reports, "r1", 0.2) == pytest.approx({"agent": 0.8})
    assert allocate(reports, "r2", 0.2) == pytest.approx({"bulk": 0.1, "ci": 0.1})


def test_replicas_agree_whatever_order_they_read_reports_in() -> None:
    # A reload reached r1 only: weight 3 and interactive there, the old class on r2.
    new, old = Demand(3, "interactive", 2), Demand(1, "batch", 2)
    reports = {"r1": {"a": new, "b": LIGHT}, "r2": {"a": old, "b": LIGHT}}
    backwards = dict(reversed(list(reports.items())))
    for me in ("r1", "r2"):
        assert allocate(reports, me, 0.1) == allocate(backwards, me, 0.1)
    assert allocate(reports, "r1", 0.1) == pytest.approx({"a": 0.45, "b": 0.05})


# -- the correction ------------------------------------------------------------------------------


def test_a_client_delivered_less_than_its_share_is_raised_and_the_others_lowered() -> None:
    balance = Balance(gain=0.5, settle=0)
    shares = {"heavy": 0.6, "light": 0.4}
    factors = balance.update(shares, {"heavy": 5.0, "light": 5.0})  # wanted 6 / 4
    assert factors["heavy"] == pytest.approx(math.sqrt(6 / 5))
    assert factors["light"] == pytest.approx(math.sqrt(4 / 5))
    factors = balance.update(shares, {"heavy": 6.0, "light": 4.0})  # on target: it stays
    assert factors["heavy"] == pytest.approx(math.sqrt(6 / 5))


def test_corrections_are_bounded() -> None:
    balance = Balance(gain=1.0, bounds=(0.8, 1.25), settle=0)
    for _ in range(10):
        factors = balance.update({"a": 0.5, "b": 0.5}, {"a": 1.0, "b": 9.0})
    assert factors == {"a": 1.25, "b": 0.8}


def test_nothing_is_corrected_for_a_client_with_nothing_delivered() -> None:
    balance = Balance(gain=1.0, bounds=(0.1, 10), settle=0)
    # a sent nothing in the meter's span: no ratio to go by, it keeps its factor
    assert balance.update({"a": 0.5, "b": 0.5}, {"b": 4.0}) == {"a": 1.0, "b": 0.5}


def test_corrections_wait_for_the_meter_after_the_waiting_clients_change() -> None:
    balance = Balance(gain=1.0, bounds=(0.1, 10), settle=2)
    shares = {"a": 0.5, "b": 0.5}
    skewed = {"a": 1.0, "b": 3.0}
    assert balance.update(shares, skewed) == {"a": 1.0, "b": 1.0}  # a new set: held
    assert balance.update(shares, skewed) == {"a": 1.0, "b": 1.0}
    assert balance.update(shares, skewed)["a"] == pytest.approx(2.0)  # then corrected
    factors = balance.update({"a": 0.5, "c": 0.5}, {"a": 2.0, "c": 2.0})
    assert factors == {"a": pytest.approx(2.0), "c": 1.0}  # b forgotten, c new: held again
    balance.reset()
    assert balance.factor == {}


def test_the_balance_is_forgotten_when_the_fleet_stops_contending() -> None:
    balance = Balance(gain=1.0, settle=0)
    reports = {"r1": {"a": Demand(1, "batch", 1, 1.0)}, "r2": {"b": Demand(1, "batch", 1, 3.0)}}
    allocate(reports, "r1", 0.1, balance)
    allocate(reports, "r1", 0.1, balance)
    assert balance.factor["a"] > 1
    assert allocate({"r1": reports["r1"]}, "r1", 0.1, balance) is None
    assert balance.factor == {}


def test_the_allocation_applies_the_correction() -> None:
    balance = Balance(gain=1.0, bounds=(0.5, 2.0), settle=0)
    reports = {"r1": {"a": Demand(1, "batch", 1, 1.0)}, "r2": {"b": Demand(1, "batch", 1, 3.0)}}
    parts = allocate(reports, "r1", 0.1, balance)
    assert parts == pytest.approx({"a": 0.5 * 2.0})


# -- the meter -----------------------------------------------------------------------------------


def test_the_meter_gives_each_clients_recent_send_rate() -> None:
    meter = SendMeter(span=2.0)
    for i in range(21):
        meter.note("a", i * 0.25)  # 4 req/s for 5 s
    assert meter.rates(5.0) == {"a": pytest.approx(4.0)}
    assert meter.rates(7.0) == {}, "forgotten once its span passed without a send"


def test_a_client_that_just_started_is_measured_since_it_started() -> None:
    meter = SendMeter(span=3.0, shortest=0.5)
    meter.note("new", 10.0)
    meter.note("new", 10.5)
    assert meter.rates(11.0) == {"new": pytest.approx(2.0)}  # 2 in 1 s, not 2 in 3 s
    assert meter.rates(10.6) == {"new": pytest.approx(2 / 0.6)}
    meter.note("x", 20.0)
    assert meter.rates(20.0) == {"x": pytest.approx(1 / 0.5)}  # "new" went quiet: forgotten


# -- the gates -----------------------------------------------------------------------------------


def test_a_paced_client_sends_at_its_part_of_the_rate() -> None:
    gates = FleetParts(catch_up=0.0)
    gates.set({"a": 0.25})
    sent, now = 0, 0.0
    while now < 10.0:
        if gates.wait("a", 8.0, now) == 0.0:
            gates.charge("a", 8.0, now)
            sent += 1
        now = round(now + 0.01, 2)
    assert sent == 20  # 2 req/s for 10 s
    assert gates.wait("other", 8.0, now) == 0.0, "a client the fleet does not name is free"


def test_a_lowered_rate_lowers_every_part_at_once() -> None:
    gates = FleetParts(catch_up=0.0)
    gates.set({"a": 0.5})
    gates.charge("a", 10.0, 0.0)
    assert gates.wait("a", 10.0, 0.0) == pytest.approx(0.2)
    assert gates.wait("a", 5.0, 0.0) == pytest.approx(0.4)


def test_every_client_may_catch_up_the_same_time_whatever_its_rate() -> None:
    gates = FleetParts(catch_up=1.0)
    gates.set({"fast": 0.6, "slow": 0.05})
    for client in ("fast", "slow"):
        gates.charge(client, 10.0, 0.0)
    # Both idle for 3 s: each may send one second of its part back to back, no more.
    burst = {}
    for client in ("fast", "slow"):
        n = 0
        while gates.wait(client, 10.0, 3.0) == 0.0:
            gates.charge(client, 10.0, 3.0)
            n += 1
        burst[client] = n
    assert burst == {"fast": 7, "slow": 1}  # 6 req/s and 0.5 req/s, plus the slot due now


def test_a_refund_gives_the_slot_back_and_a_retry_is_charged_when_it_goes() -> None:
    gates = FleetParts(catch_up=0.0)
    gates.set({"a": 0.1})
    gates.charge("a", 10.0, 0.0)
    assert gates.wait("a", 10.0, 0.0) == pytest.approx(1.0)
    gates.refund("a", 10.0, 0.0)
    assert gates.wait("a", 10.0, 0.0) == 0.0
    gates.charge("a", 10.0, 0.0)
    gates.charge("a", 10.0, 0.0)  # a retry went although not due: the next waits for both
    assert gates.wait("a", 10.0, 0.0) == pytest.approx(2.0)


def test_a_new_allocation_keeps_the_pacing_of_who_stays_and_forgets_who_left() -> None:
    gates = FleetParts(catch_up=0.0)
    gates.set({"a": 0.1, "b": 0.1})
    gates.charge("a", 10.0, 0.0)
    gates.charge("b", 10.0, 0.0)
    gates.set({"a": 0.1, "c": 0.5})
    assert gates.wait("a", 10.0, 0.5) == pytest.approx(0.5), "no fresh credit at each report"
    assert gates.wait("b", 10.0, 0.5) == 0.0
    gates.set({"b": 0.1})
    assert gates.wait("b", 10.0, 0.5) == 0.0, "b starts afresh"
    assert gates.opens_in(["a", "b", "c"], 10.0, 0.5) == 0.0
    gates.charge("b", 10.0, 0.5)
    assert gates.opens_in(["a", "b"], 10.0, 0.5) == pytest.approx(1.0)
    assert gates.opens_in(["a"], 10.0, 0.5) is None
    gates.set(None)
    assert not gates.active and gates.wait("b", 10.0, 0.5) == 0.0


def test_the_gates_count_every_send_on_the_meter_paced_or_not() -> None:
    gates = FleetParts()
    gates.meter = SendMeter(span=1.0)
    gates.set({"a": 0.5})
    gates.charge("a", 10.0, 0.0)
    gates.charge("free", 10.0, 0.0)
    assert gates.meter.rates(0.5) == {"a": 2.0, "free": 2.0}


def test_a_replica_holds_the_cap_less_what_the_others_hold_or_its_part_alone() -> None:
    parts = FleetParts()
    assert parts.cap("a", None) is None
    assert parts.cap("a", 8) == 8  # one replica, no reports
    parts.divisor = 3
    assert parts.cap("a", 8) == 3 and parts.cap("a", 1) == 1, "rounded up: one always goes"
    parts.caps = {"a": 3, "b": 0}
    assert parts.cap("a", 8) == 3 and parts.cap("b", 8) == 0 and parts.cap("c", 8) == 8


# -- what a client can use ------------------------------------------------------------------------


def test_an_agent_with_one_request_waiting_does_not_hold_the_rate_for_a_tick() -> None:
    """At 10 req/s an interactive client that sent 0.5 req/s and has one request waiting wants
    0.15 of the rate; batch (saturating) gets the rest, not only its floor."""
    reports = {"r1": {"agent": Demand(1, "interactive", 1, 0.5)},
               "r2": {"bulk": Demand(1, "batch", 40, 8.0), "ci": Demand(1, "batch", 40, 1.0)}}
    shares = account_shares(reports, 0.1, rate=10.0)
    assert shares == pytest.approx({"agent": 0.15, "bulk": 0.425, "ci": 0.425})
    assert account_shares(reports, 0.1) == pytest.approx(
        {"agent": 0.9, "bulk": 0.05, "ci": 0.05}), "without the rate: the class rule alone"


def test_what_a_light_batch_client_leaves_goes_to_the_others_by_weight() -> None:
    reports = {"r1": {"light": Demand(1, "batch", 1, 0.0), "heavy": Demand(3, "batch", 50, 5.0)},
               "r2": {"other": Demand(1, "batch", 50, 2.0)}}
    shares = account_shares(reports, 0.1, rate=10.0)
    assert shares == pytest.approx({"light": 0.1, "heavy": 0.675, "other": 0.225})


def test_interactive_that_wants_more_than_its_part_takes_what_batch_leaves() -> None:
    reports = {"r1": {"agent": Demand(1, "interactive", 50, 9.0)},
               "r2": {"bulk": Demand(1, "batch", 0, 0.0), "ci": Demand(1, "batch", 1, 0.0)}}
    # ci wants 0.1 (one waiting, at 10 req/s): its floor is all it needs; agent gets the rest
    assert account_shares(reports, 0.2, rate=10.0) == pytest.approx({"agent": 0.9, "ci": 0.1})


def test_what_no_one_wants_is_spread_by_weight_so_the_shares_add_up_to_one() -> None:
    reports = {"r1": {"a": Demand(3, "batch", 1, 0.0)}, "r2": {"b": Demand(1, "batch", 1, 0.0)}}
    shares = account_shares(reports, 0.1, rate=100.0)  # each wants 0.01
    assert shares == pytest.approx({"a": 0.01 + 0.98 * 0.75, "b": 0.01 + 0.98 * 0.25})
    assert sum(shares.values()) == pytest.approx(1.0)


def test_saturating_clients_keep_the_class_rule() -> None:
    reports = {"r1": {"heavy": Demand(3, "batch", 30, 6.0)},
               "r2": {"l1": Demand(1, "batch", 30, 2.0), "l2": Demand(1, "batch", 30, 2.0)}}
    assert account_shares(reports, 0.1, rate=10.0) == pytest.approx(
        {"heavy": 0.6, "l1": 0.2, "l2": 0.2})
