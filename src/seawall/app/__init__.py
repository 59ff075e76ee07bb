"""The cases service, built only from seawall's public API.

`create_app(settings)` returns the FastAPI application: the Cases API with
idempotency keys and a transactional outbox, RFC 9457 problem responses,
correlation ids, a body size limit and health endpoints.
"""

from seawall.app._factory import create_app

__all__ = ["create_app"]
