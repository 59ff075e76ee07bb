"""`EchoServer`: a trivial fake for health checks, client tests and throughput benchmarks."""

from __future__ import annotations

from typing import Unpack

from seawall.testing._http import NO_BODY_STATUSES, FakeRequest, FakeResponse, error_document
from seawall.testing._server import FakeServer, FakeServerOptions

__all__ = ["EchoServer"]


class EchoServer(FakeServer):
    """A trivial fake for health checks, client tests and throughput benchmarks (``echo``).

    Routes:
        ``GET /items/{id}``: a small JSON object, ``{"id": ..., "name": ..., "price": 1299}``.
        ``GET|POST|PUT|PATCH|DELETE /echo``: the request as JSON (method, path,
        query, headers, body as text).
        ``GET /status/{code}``: answers with that status (a problem document).

    Takes the same options as `FakeServer`.
    """

    provider_name = "echo"

    def __init__(self, **options: Unpack[FakeServerOptions]) -> None:
        super().__init__(**options)
        self.route("GET", "/items/{id}", _item)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            self.route(method, "/echo", _echo)
        self.route("GET", "/status/{code}", _status)


def _item(request: FakeRequest) -> FakeResponse:
    item_id = request.path_params["id"]
    return FakeResponse.json({"id": item_id, "name": f"item {item_id}", "price": 1299})


def _echo(request: FakeRequest) -> FakeResponse:
    return FakeResponse.json(
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": dict(request.headers),
            "body": request.body.decode(errors="replace"),
        }
    )


def _status(request: FakeRequest) -> FakeResponse:
    code = request.path_params["code"]
    if not code.isdigit() or not 200 <= int(code) <= 599:
        return FakeResponse.json(
            error_document("invalid_request", "the status must be 200 to 599"), 400
        )
    status = int(code)
    if status in NO_BODY_STATUSES:
        return FakeResponse.empty(status)
    return FakeResponse.problem(status, f"you asked for {status}")
