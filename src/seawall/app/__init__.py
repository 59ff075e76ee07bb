"""The cases service, built only from seawall's public API.

`create_app(settings)` returns the FastAPI application: the Cases API with
idempotency keys and a transactional outbox, RFC 9457 problem responses,
correlation ids, a body size limit and health endpoints. `ProblemHttpProtocol`
is the uvicorn protocol `seawall serve` runs it with: requests that are not even
HTTP/1.1 get a problem document too.
"""

from seawall.app._factory import create_app
from seawall.app._server import ProblemHttpProtocol

__all__ = ["ProblemHttpProtocol", "create_app"]
