"""`ServiceAdapter`: what every HTTP adapter shares."""

from __future__ import annotations

from typing import Self

from seawall.http import ExternalService

__all__ = ["ServiceAdapter"]


class ServiceAdapter:
    """An adapter over one `ExternalService`, which it closes only if it made it.

    Give an adapter a service you manage (``Adapter(service)``), or let its
    ``build`` classmethod make one: then ``aclose`` (and ``async with``) closes
    the service's connections too.
    """

    def __init__(self, service: ExternalService) -> None:
        self.service = service
        self._owns_service = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.service!r})"

    def _owned(self) -> Self:
        """Mark the service as made by ``build``: `aclose` closes it."""
        self._owns_service = True
        return self

    async def aclose(self) -> None:
        """Close the service's connections, if ``build`` made it."""
        if self._owns_service:
            await self.service.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
