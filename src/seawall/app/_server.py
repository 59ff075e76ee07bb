"""uvicorn's HTTP/1.1 protocol, answering a request it cannot parse with a problem.

uvicorn refuses bytes that are not HTTP/1.1 (a broken request line, a header
name with a space, a chunk size that is not hex) before the app sees them, with
a ``text/plain`` 400 of its own. Every error seawall's service answers is an
``application/problem+json`` document, so `seawall serve` runs this protocol,
which writes that 400 as one. The connection is closed afterwards, as uvicorn
does: after a parse error, where the next request starts is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from seawall.app._problems import PROBLEM_JSON, ProblemDetails, problem_type

MALFORMED_HTTP = ProblemDetails(
    type=problem_type("malformed-http"),
    title=HTTPStatus.BAD_REQUEST.phrase,
    status=HTTPStatus.BAD_REQUEST,
    detail="The request is not valid HTTP/1.1; the connection was closed.",
)
_BODY = MALFORMED_HTTP.model_dump_json(exclude_none=True).encode()


def malformed_http_response(default_headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The whole 400 response to bytes that are not HTTP/1.1 (pure).

    Args:
        default_headers: the server's own headers (``date``; ``server`` when on).
    """
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [
        b"content-type: " + PROBLEM_JSON.encode() + b"\r\n",
        b"content-length: " + str(len(_BODY)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + _BODY


class ProblemHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with its 400 for unparsable requests as a problem."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(malformed_http_response(self.server_state.default_headers))
        self.transport.close()
