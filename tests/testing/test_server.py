"""`FakeServer`: HTTP/1.1 over real sockets, routing, recording, stats and the ways to run it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import httpx
import pytest

from seawall.testing import EchoServer, FakeRequest, FakeResponse, FakeServer
from seawall.testing._http import Router


def raw_exchange(port: int, payload: bytes) -> bytes:
    """Send *payload* on a fresh socket and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(payload)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


class Shop(FakeServer):
    """A tiny fake with sync, async and failing handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", "/orders/{order_id}/lines/{line}", self.line)
        self.route("POST", "/orders", self.create)
        self.route("GET", "/slow", self.slow)
        self.route("GET", "/boom", self.boom)
        self.route("GET", "/latin", self.latin)

    def line(self, request: FakeRequest) -> FakeResponse:
        return FakeResponse.json(request.path_params)

    def create(self, request: FakeRequest) -> FakeResponse:
        return FakeResponse.json({"form": request.form()}, status=201)

    async def slow(self, request: FakeRequest) -> FakeResponse:
        await asyncio.sleep(0)
        return FakeResponse.text("done")

    def boom(self, request: FakeRequest) -> FakeResponse:
        raise RuntimeError("handler bug")

    def latin(self, request: FakeRequest) -> FakeResponse:
        return FakeResponse.text("x", headers={"X-Name": "\u0141ukasz"})


# --- routing ------------------------------------------------------------------------


def test_every_fake_answers_ping_on_its_loopback_url(
    client: httpx.Client, echo: EchoServer
) -> None:
    response = client.get("/ping")

    assert response.json() == {"ok": True}
    assert echo.url == f"http://127.0.0.1:{echo.port}"


def test_routes_capture_decoded_path_parameters() -> None:
    with Shop() as fake, httpx.Client(base_url=fake.url) as http:
        response = http.get("/orders/o%201/lines/7")

    assert response.json() == {"order_id": "o 1", "line": "7"}


def test_async_handlers_are_awaited() -> None:
    with Shop() as fake, httpx.Client(base_url=fake.url) as http:
        response = http.get("/slow")

    assert (response.status_code, response.text) == (200, "done")


def test_unknown_routes_get_a_404_and_wrong_methods_a_405(client: httpx.Client) -> None:
    missing = client.get("/nowhere")
    wrong = client.delete("/items/1")

    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET"


def test_a_handler_exception_is_a_500_that_is_recorded_and_the_server_keeps_serving() -> None:
    with Shop() as fake, httpx.Client(base_url=fake.url) as http:
        failed = http.get("/boom")
        after = http.get("/ping")

        errors = fake.errors

    assert failed.status_code == 500
    assert failed.json()["error"]["message"] == "the fake's handler raised RuntimeError"
    assert after.status_code == 200
    assert [type(error) for error in errors] == [RuntimeError]


def test_a_header_outside_latin_1_is_a_recorded_500() -> None:
    with Shop() as fake, httpx.Client(base_url=fake.url) as http:
        response = http.get("/latin")

        errors = fake.errors

    assert response.status_code == 500
    assert [type(error) for error in errors] == [UnicodeEncodeError]


def test_router_prefers_static_paths_and_reports_allowed_methods() -> None:
    router = Router()
    router.add("GET", "/v1/charges/{id}", lambda r: FakeResponse.text("pattern"))
    router.add("POST", "/v1/charges/search", lambda r: FakeResponse.text("static"))

    static = router.match("POST", "/v1/charges/search")
    captured = router.match("GET", "/v1/charges/ch_1")
    empty_segment = router.match("GET", "/v1/charges/")
    wrong_method = router.match("PUT", "/v1/charges/ch_1")

    assert static[0] is not None
    assert captured[1] == {"id": "ch_1"}
    assert empty_segment == (None, {}, ())
    assert (wrong_method[0], wrong_method[2]) == (None, ("GET",))


def test_router_refuses_relative_patterns() -> None:
    with pytest.raises(ValueError, match="starts with '/'"):
        Router().add("GET", "v1/charges", lambda r: FakeResponse.empty())


# --- requests -----------------------------------------------------------------------


def test_requests_are_recorded_with_query_headers_and_body(
    client: httpx.Client, echo: EchoServer
) -> None:
    client.post(
        "/echo?tag=a&tag=b&empty=",
        data={"amount": "100", "metadata[order]": "42"},
        headers={"X-Trace": "t-1"},
    )

    (request,) = echo.requests

    assert (request.method, request.path) == ("POST", "/echo")
    assert request.query == {"tag": ["a", "b"], "empty": [""]}
    assert (request.param("tag"), request.param("none", "dflt")) == ("a", "dflt")
    assert request.headers["x-trace"] == request.headers["X-TRACE"] == "t-1"
    assert request.form() == {"amount": "100", "metadata[order]": "42"}


def test_json_bodies_are_parsed_and_echoed(client: httpx.Client, echo: EchoServer) -> None:
    response = client.put("/echo", json={"a": [1, 2]})

    assert response.json()["body"] == '{"a":[1,2]}'
    assert echo.requests[0].json() == {"a": [1, 2]}


def test_request_repr_shows_neither_headers_nor_body() -> None:
    request = FakeRequest(
        "post", "/v1/charges", headers={"Authorization": "Bearer sk_live_secret"}, body=b"pan"
    )

    text = repr(request) + repr(request.headers)

    assert "sk_live_secret" not in text
    assert "pan" not in text.replace("/v1", "")
    assert request.bearer_token() == "sk_live_secret"


def test_basic_auth_is_decoded_and_broken_headers_give_none() -> None:
    good = FakeRequest("GET", "/", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    broken = FakeRequest("GET", "/", headers={"Authorization": "Basic !!!"})

    assert good.basic_auth() == ("user", "pass")
    assert broken.basic_auth() is None
    assert good.bearer_token() is None


def test_recording_is_bounded_can_be_cleared_and_turned_off() -> None:
    with EchoServer(max_recorded=3) as bounded, httpx.Client(base_url=bounded.url) as http:
        for index in range(5):
            http.get(f"/items/{index}")
        kept = [request.path for request in bounded.requests]
        bounded.clear()
        cleared = bounded.requests
    with EchoServer(record=False) as silent, httpx.Client(base_url=silent.url) as http:
        http.get("/ping")
        unrecorded = silent.requests

    assert kept == ["/items/2", "/items/3", "/items/4"]
    assert cleared == unrecorded == []
    assert silent.stats.requests == 1


# --- HTTP/1.1 over the wire ---------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(
    client: httpx.Client, echo: EchoServer
) -> None:
    statuses = {client.get(f"/items/{index}").status_code for index in range(200)}

    assert statuses == {200}
    assert (echo.stats.requests, echo.stats.connections) == (200, 1)


def test_connection_close_is_honoured(client: httpx.Client, echo: EchoServer) -> None:
    responses = [client.get("/ping", headers={"Connection": "close"}) for _ in range(3)]

    assert {response.headers["connection"] for response in responses} == {"close"}
    assert echo.stats.connections == 3


def test_http_1_0_closes_after_the_response(echo: EchoServer) -> None:
    answer = raw_exchange(echo.port, b"GET /items/9 HTTP/1.0\r\nHost: x\r\n\r\n")

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in head
    assert json.loads(body)["id"] == "9"


def test_pipelined_requests_are_answered_in_order(echo: EchoServer) -> None:
    payload = b"GET /items/1 HTTP/1.1\r\n\r\nGET /items/2 HTTP/1.1\r\nConnection: close\r\n\r\n"

    answer = raw_exchange(echo.port, payload)

    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.index(b'"id":"1"') < answer.index(b'"id":"2"')


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 8388609\r\n\r\n", b"413"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ],
    ids=["request-line", "header", "chunked", "bad-length", "too-large", "huge-head"],
)
def test_bad_requests_are_refused_and_the_connection_closed(
    echo: EchoServer, payload: bytes, status: bytes
) -> None:
    answer = raw_exchange(echo.port, payload)

    assert answer.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close" in answer


def test_expect_100_continue_gets_an_interim_response(echo: EchoServer) -> None:
    payload = (
        b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n\r\nhi"
    )

    answer = raw_exchange(echo.port, payload)

    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


def test_a_chunked_body_from_httpx_is_refused(client: httpx.Client) -> None:
    response = client.post("/echo", content=iter([b"a", b"b"]))

    assert response.status_code == 400
    assert "chunked" in response.json()["error"]["message"]


def test_every_response_carries_content_length_except_204(client: httpx.Client) -> None:
    ok = client.get("/status/201")
    empty = client.get("/status/204")

    assert ok.headers["content-length"] == str(len(ok.content))
    assert "content-length" not in empty.headers
    assert empty.content == b""


def test_a_body_of_several_megabytes_is_received(client: httpx.Client) -> None:
    body = b"x" * (3 * 1024 * 1024)

    response = client.post("/echo", content=body)

    assert len(response.json()["body"]) == len(body)


async def test_many_concurrent_connections_are_served(echo: EchoServer) -> None:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=echo.url, limits=limits) as http:
        responses = await asyncio.gather(*(http.get(f"/items/{n}") for n in range(200)))

    assert {response.status_code for response in responses} == {200}
    assert echo.stats.connections > 1


# --- stats and connections -----------------------------------------------------------------


def test_stats_show_connections_closed_after_the_client_closes(echo: EchoServer) -> None:
    with httpx.Client(base_url=echo.url) as http:
        http.get("/ping")
        during = echo.stats

    open_after = echo.wait_for_connections(0)

    assert (during.open_connections, during.connections) == (1, 1)
    assert open_after == echo.stats.open_connections == 0
    assert echo.stats.active_requests == 0


def test_wait_for_connections_times_out_while_a_client_holds_one(echo: EchoServer) -> None:
    with httpx.Client(base_url=echo.url) as http:
        http.get("/ping")

        with pytest.raises(TimeoutError, match="1 connections still open"):
            echo.wait_for_connections(0, timeout=0.01)


def test_wait_for_requests_returns_once_they_arrived_and_times_out_otherwise(
    client: httpx.Client, echo: EchoServer
) -> None:
    client.get("/ping")
    client.get("/_stats")

    arrived = echo.wait_for_requests(1)

    assert arrived == 1
    with pytest.raises(TimeoutError, match="1 requests received"):
        echo.wait_for_requests(2, timeout=0.01)


# --- running ------------------------------------------------------------------------


def test_start_and_stop_explicitly_and_restart_on_the_same_port() -> None:
    fake = EchoServer()
    fake.start()
    port = fake.port
    fake.stop()
    stopped = fake.running

    with fake, httpx.Client(base_url=fake.url) as http:
        status = http.get("/ping").status_code

    assert stopped is False
    assert (fake.port, status) == (port, 200)


def test_port_before_start_and_a_second_start_are_errors() -> None:
    fake = EchoServer()

    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.url
    with fake, pytest.raises(RuntimeError, match="already running"):
        fake.start()


def test_a_taken_port_fails_start_with_os_error(echo: EchoServer) -> None:
    with pytest.raises(OSError, match="address"):
        EchoServer(port=echo.port).start()


def test_ports_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="port"):
        EchoServer(port=70000)


def test_stop_closes_open_connections_and_the_client_sees_it() -> None:
    fake = EchoServer().start()
    with httpx.Client(base_url=fake.url) as http:
        http.get("/ping")
        fake.stop()

        with pytest.raises(httpx.TransportError):
            http.get("/ping")

    assert fake.stats.open_connections == 0


async def test_async_with_runs_in_a_thread_even_when_the_test_loop_blocks() -> None:
    async with EchoServer() as fake:
        result: list[int] = []

        def call() -> None:
            result.append(httpx.get(f"{fake.url}/ping").status_code)

        # A blocking call on the test's loop: the fake still answers from its own thread.
        worker = threading.Thread(target=call)
        worker.start()
        worker.join(5.0)

    assert result == [200]
    assert not fake.running


async def test_async_clients_work_against_a_fake_started_with_async_with() -> None:
    async with (
        EchoServer() as fake,
        httpx.AsyncClient(base_url=fake.url) as http,
    ):
        response = await http.get("/items/abc")

    assert response.json() == {"id": "abc", "name": "item abc", "price": 1299}


async def test_serve_runs_in_the_current_loop_until_stop_is_set() -> None:
    fake = EchoServer()
    stop = asyncio.Event()
    ready = asyncio.Event()
    serving = asyncio.create_task(fake.serve(stop=stop, ready=ready.set))
    await ready.wait()

    async with httpx.AsyncClient(base_url=fake.url) as http:
        response = await http.get("/ping")
    stop.set()
    await serving

    assert response.status_code == 200


def test_repr_names_the_fake_and_its_url(echo: EchoServer) -> None:
    assert repr(echo) == f"<EchoServer {echo.url}>"
    assert repr(EchoServer()) == "<EchoServer not started>"
