"""`ServerChaos` and the pure fault decisions behind it, without a server."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from seawall.resilience import parse_retry_after
from seawall.testing import Fault, ServerChaos
from seawall.testing._faults import (
    MALFORMED_BODY,
    ErrorRate,
    LatencyRange,
    ScheduledFault,
    choose_fault,
    choose_latency,
    fault_reply,
    format_retry_after,
)


def no_draw() -> float:
    raise AssertionError("nothing should be drawn")


# --- pure decisions ----------------------------------------------------------------


def test_choose_fault_uses_the_first_scheduled_fault_that_matches_the_path() -> None:
    scheduled = [
        ScheduledFault(Fault("fail", 503), 1, "/api/"),
        ScheduledFault(Fault("rate_limit", 429, "1"), 2),
    ]

    decisions = [choose_fault(scheduled, None, path, no_draw) for path in ("/oauth", "/api/x")]

    assert decisions == [(1, Fault("rate_limit", 429, "1")), (0, Fault("fail", 503))]


def test_choose_fault_draws_for_the_error_rate_only_when_nothing_is_scheduled() -> None:
    rate = ErrorRate(0.5, 502)

    hit = choose_fault([], rate, "/x", lambda: 0.49)
    miss = choose_fault([], rate, "/x", lambda: 0.5)
    scheduled = choose_fault([ScheduledFault(Fault("drop"), 1)], rate, "/x", no_draw)

    assert (hit, miss, scheduled) == ((None, Fault("error", 502)), (None, None), (0, Fault("drop")))


def test_choose_fault_leaves_paths_outside_the_error_rate_prefix_alone() -> None:
    decision = choose_fault([], ErrorRate(1.0, 500, "/v1/"), "/oauth/token", no_draw)

    assert decision == (None, None)


def test_choose_latency_is_fixed_uniform_or_zero_outside_the_prefix() -> None:
    def uniform(low: float, high: float) -> float:
        return (low + high) / 2

    fixed = choose_latency(LatencyRange(0.2, 0.2), "/x", uniform)
    drawn = choose_latency(LatencyRange(0.1, 0.3), "/x", uniform)
    outside = choose_latency(LatencyRange(1.0, 1.0, "/api/"), "/ping", uniform)
    off = choose_latency(None, "/x", uniform)

    assert (fixed, drawn, outside, off) == (0.2, 0.2, 0.0, 0.0)


def test_fault_reply_sends_a_problem_document_with_retry_after() -> None:
    reply = fault_reply(Fault("rate_limit", 429, "2"))

    assert reply is not None
    status, headers, body = reply
    assert (status, headers["Retry-After"]) == (429, "2")
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["title"] == "Too Many Requests"


def test_fault_reply_breaks_bodies_and_content_types_and_sends_nothing_for_hang_or_drop() -> None:
    malformed = fault_reply(Fault("malformed"))
    html = fault_reply(Fault("wrong_content_type"))

    assert malformed == (200, {"Content-Type": "application/json"}, MALFORMED_BODY)
    assert html is not None
    assert html[1]["Content-Type"].startswith("text/html")
    assert fault_reply(Fault("hang")) is None
    assert fault_reply(Fault("drop", processed=True)) is None


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (1.0, "1"),
        (3, "3"),
        (0.5, "0.5"),
        (timedelta(seconds=90), "90"),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ],
)
def test_retry_after_is_sent_as_an_integer_when_whole_else_as_given(
    given: float | timedelta | str, sent: str
) -> None:
    header = format_retry_after(given)

    assert header == sent
    assert parse_retry_after(header, now=0.0) is not None


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), " "])
def test_retry_after_refuses_negative_infinite_and_empty_values(bad: float | str) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        format_retry_after(bad)


# --- the knobs -------------------------------------------------------------------------


def test_scheduled_faults_are_used_in_the_order_they_were_set() -> None:
    chaos = ServerChaos()
    chaos.rate_limit_next(1, retry_after=2)
    chaos.fail_next(2, status=502)

    kinds = [chaos.decide("/x")[1] for _ in range(4)]

    assert kinds == [
        Fault("rate_limit", 429, "2"),
        Fault("fail", 502),
        Fault("fail", 502),
        None,
    ]
    assert not chaos.active


def test_a_scoped_fault_waits_for_a_matching_path() -> None:
    chaos = ServerChaos()
    chaos.drop_next(1, path_prefix="/api/")

    first = chaos.decide("/oauth/token")
    second = chaos.decide("/api/v1/tickets")

    assert (first, second) == ((0.0, None), (0.0, Fault("drop")))


def test_injected_counts_each_kind_and_reset_clears_knobs_and_counts() -> None:
    chaos = ServerChaos()
    chaos.latency(0.5)
    chaos.hang_next(1, processed=True)
    chaos.malformed_next(1)
    for _ in range(3):
        chaos.decide("/x")

    counts = chaos.injected
    chaos.reset()

    assert counts["latency"] == 3
    assert (counts["hang"], counts["malformed"], counts["fail"]) == (1, 1, 0)
    assert chaos.injected == dict.fromkeys(counts, 0)
    assert (chaos.active, chaos.pending, chaos.decide("/x")) == (False, 0, (0.0, None))


def test_the_same_seed_gives_the_same_errors_and_latencies() -> None:
    def run(seed: int) -> list[tuple[float, Fault | None]]:
        chaos = ServerChaos(seed=seed)
        chaos.latency(0.1, 0.2)
        chaos.error_rate(0.3)
        return [chaos.decide("/x") for _ in range(50)]

    first, again, other = run(7), run(7), run(8)

    assert first == again
    assert first != other
    assert any(fault is not None for _, fault in first)
    assert all(0.1 <= delay <= 0.2 for delay, _ in first)


def test_latency_zero_and_error_rate_zero_turn_the_knobs_off() -> None:
    chaos = ServerChaos()
    chaos.latency(1.0)
    chaos.error_rate(1.0)

    chaos.latency(0)
    chaos.error_rate(0)

    assert not chaos.active


@pytest.mark.parametrize(
    ("knob", "arguments"),
    [
        ("fail_next", {"n": 0}),
        ("fail_next", {"n": True}),
        ("fail_next", {"status": 200}),
        ("error_rate", {"rate": 1.5}),
        ("error_rate", {"rate": 0.5, "status": 404}),
        ("latency", {"min_seconds": -1}),
        ("latency", {"min_seconds": 2, "max_seconds": 1}),
        ("drop_next", {"path_prefix": ""}),
    ],
)
def test_knobs_refuse_bad_values(knob: str, arguments: dict[str, object]) -> None:
    chaos = ServerChaos()

    with pytest.raises(ValueError, match=r"n must|status|rate|seconds|path_prefix"):
        chaos.configure({knob: arguments})


def test_configure_takes_keyword_positional_and_single_arguments() -> None:
    chaos = ServerChaos()

    chaos.configure(
        {
            "reset": True,
            "seed": 3,
            "fail_next": {"n": 2, "status": 500},
            "latency": [0.1, 0.2],
            "hang_next": 1,
        }
    )

    assert chaos.pending == 3
    assert chaos.decide("/x")[1] == Fault("fail", 500)


def test_configure_names_the_unknown_knob() -> None:
    chaos = ServerChaos()

    with pytest.raises(ValueError, match="explode_next"):
        chaos.configure({"explode_next": 1})


def test_configure_refuses_arguments_that_do_not_fit() -> None:
    chaos = ServerChaos()

    with pytest.raises(TypeError):
        chaos.configure({"fail_next": {"count": 2}})


def test_knobs_are_safe_to_turn_from_many_threads_while_requests_consume_them() -> None:
    chaos = ServerChaos()
    setters, per_setter = 4, 500
    seen: list[int] = []
    done = threading.Event()

    def set_faults() -> None:
        for _ in range(per_setter):
            chaos.fail_next(1)

    def consume() -> None:
        count = 0
        while not done.is_set() or chaos.pending:
            if chaos.decide("/x")[1] is not None:
                count += 1
        seen.append(count)

    consumers = [threading.Thread(target=consume) for _ in range(3)]
    producers = [threading.Thread(target=set_faults) for _ in range(setters)]
    for thread in consumers + producers:
        thread.start()
    for thread in producers:
        thread.join()
    done.set()
    for thread in consumers:
        thread.join()

    assert sum(seen) == setters * per_setter
    assert chaos.injected["fail"] == setters * per_setter
    assert chaos.pending == 0
