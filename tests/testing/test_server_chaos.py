"""Chaos over real HTTP: what a client sees for each knob, and the admin endpoints.

Hangs and latency are met with a tiny real client timeout: a bounded wait, not a
timing assert.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from seawall.resilience import parse_retry_after
from seawall.testing import EchoServer

TINY = 0.05


def test_fail_next_answers_with_the_status_and_retry_after_then_recovers(
    client: httpx.Client, echo: EchoServer
) -> None:
    echo.chaos.fail_next(2, status=503, retry_after=2)

    statuses = [client.get("/items/1") for _ in range(3)]

    assert [response.status_code for response in statuses] == [503, 503, 200]
    failed = statuses[0]
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["status"] == 503
    assert parse_retry_after(failed.headers["retry-after"], now=0.0) == 2.0
    assert echo.chaos.injected["fail"] == 2


def test_rate_limit_next_sends_429_with_a_decimal_retry_after(
    client: httpx.Client, echo: EchoServer
) -> None:
    echo.chaos.rate_limit_next(1, retry_after=0.5)

    limited = client.get("/ping")

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "0.5"


def test_error_rate_one_fails_every_request_with_a_5xx_problem(
    client: httpx.Client, echo: EchoServer
) -> None:
    echo.chaos.error_rate(1.0, status=502)

    statuses = {client.get("/ping").status_code for _ in range(5)}

    assert statuses == {502}
    assert echo.chaos.injected["error"] == 5


def test_a_seeded_error_rate_repeats_across_fakes() -> None:
    def statuses(seed: int) -> list[int]:
        with EchoServer(seed=seed) as fake, httpx.Client(base_url=fake.url) as http:
            fake.chaos.error_rate(0.5)
            return [http.get("/ping").status_code for _ in range(20)]

    first, again = statuses(11), statuses(11)

    assert first == again
    assert set(first) == {200, 500}


def test_malformed_next_sends_truncated_json(client: httpx.Client, echo: EchoServer) -> None:
    echo.chaos.malformed_next(1)

    response = client.get("/items/1")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_wrong_content_type_next_sends_an_html_page(client: httpx.Client, echo: EchoServer) -> None:
    echo.chaos.wrong_content_type_next(1)

    response = client.get("/items/1")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")


def test_drop_next_closes_the_connection_without_a_response(
    client: httpx.Client, echo: EchoServer
) -> None:
    echo.chaos.drop_next(1)

    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        client.get("/items/1")
    after = client.get("/items/1")

    assert after.status_code == 200
    assert echo.chaos.injected["drop"] == 1


def test_hang_next_never_answers_and_the_connection_closes_when_the_client_gives_up(
    echo: EchoServer,
) -> None:
    echo.chaos.hang_next(1)

    with httpx.Client(base_url=echo.url, timeout=TINY) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get("/items/1")
        after = http.get("/items/2")

    assert after.status_code == 200
    assert echo.wait_for_connections(0) == 0
    assert echo.stats.active_requests == 0


def test_stopping_the_server_ends_a_hanging_request() -> None:
    fake = EchoServer().start()
    fake.chaos.hang_next(1)
    failures: list[BaseException] = []

    def call() -> None:
        try:
            httpx.get(f"{fake.url}/ping", timeout=10.0)
        except httpx.TransportError as exc:
            failures.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    fake.wait_for_requests(1)
    fake.stop()
    caller.join(10.0)

    assert len(failures) == 1
    assert fake.chaos.injected["hang"] == 1


def test_latency_delays_the_answer_past_a_short_client_timeout(echo: EchoServer) -> None:
    echo.chaos.latency(5.0)

    with httpx.Client(base_url=echo.url, timeout=TINY) as http, pytest.raises(httpx.ReadTimeout):
        http.get("/ping")

    assert echo.chaos.injected["latency"] == 1


def test_small_latency_still_answers(client: httpx.Client, echo: EchoServer) -> None:
    echo.chaos.latency(0.001, 0.002)

    response = client.get("/ping")

    assert response.status_code == 200
    assert echo.chaos.injected["latency"] == 1


def test_a_path_prefix_scopes_a_knob(client: httpx.Client, echo: EchoServer) -> None:
    echo.chaos.fail_next(1, status=500, path_prefix="/items/")

    ping = client.get("/ping")
    item = client.get("/items/1")

    assert (ping.status_code, item.status_code) == (200, 500)


def test_requests_hit_by_chaos_are_still_recorded_and_counted(
    client: httpx.Client, echo: EchoServer
) -> None:
    echo.chaos.fail_next(1)

    client.get("/items/1")

    assert [request.path for request in echo.requests] == ["/items/1"]
    assert echo.stats.requests == 1


def test_knobs_turned_from_another_thread_take_effect(
    client: httpx.Client, echo: EchoServer
) -> None:
    setters = [threading.Thread(target=echo.chaos.fail_next, args=(1,)) for _ in range(10)]
    for thread in setters:
        thread.start()
    for thread in setters:
        thread.join()

    statuses = [client.get("/ping").status_code for _ in range(11)]

    assert statuses == [503] * 10 + [200]


# --- admin endpoints --------------------------------------------------------------------


def test_post_chaos_sets_knobs_and_get_stats_reports(
    client: httpx.Client, echo: EchoServer
) -> None:
    answer = client.post("/_chaos", json={"fail_next": {"n": 2, "status": 500}})
    client.get("/ping")
    stats = client.get("/_stats").json()

    assert answer.json() == {"ok": True, "pending": 2, "injected": answer.json()["injected"]}
    assert stats["requests"] == 1
    assert stats["chaos"]["pending"] == 1
    assert stats["chaos"]["injected"]["fail"] == 1
    assert stats["open_connections"] == 1


def test_admin_endpoints_are_neither_subject_to_chaos_nor_recorded(
    client: httpx.Client, echo: EchoServer
) -> None:
    echo.chaos.drop_next(1)
    echo.chaos.error_rate(1.0)

    stats = client.get("/_stats")
    reset = client.post("/_chaos", json={"reset": True})
    after = client.get("/ping")

    assert (stats.status_code, reset.status_code, after.status_code) == (200, 200, 200)
    assert [request.path for request in echo.requests] == ["/ping"]


@pytest.mark.parametrize(
    "body",
    [b'{"explode_next": 1}', b'{"fail_next": {"status": 200}}', b"[1, 2]", b"not json"],
)
def test_a_bad_chaos_request_is_a_400(client: httpx.Client, body: bytes) -> None:
    response = client.post("/_chaos", content=body)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_chaos"


def test_admin_endpoints_refuse_other_methods(client: httpx.Client) -> None:
    chaos = client.get("/_chaos")
    stats = client.post("/_stats")

    assert chaos.json() == {"pending": 0, "injected": chaos.json()["injected"]}
    assert (stats.status_code, stats.headers["allow"]) == (405, "GET")
