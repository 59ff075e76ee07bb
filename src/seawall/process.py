"""How seawall's processes run: their event loop, and a start-up heap out of the GC's way.

``seawall serve``, ``relay``, ``worker``, ``sync crm`` and ``import`` call
`freeze_startup_heap` once everything is imported and built, then run their main
coroutine with `run` (``serve`` through uvicorn, which picks uvloop itself). A
service built on the library may do the same in its own entry point.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["freeze_startup_heap", "run"]

T = TypeVar("T")


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now to the collector's permanent generation.

    What a process imports and builds at start-up (SQLAlchemy, pydantic, FastAPI,
    the app: some 150,000 objects) lives as long as the process. Python's full
    collections still walk all of it, each time the objects that survived since
    the last one reach a quarter of the oldest generation. A process that keeps
    many objects alive for a while triggers such collections often: in a CRM
    resync they took about a third of the time (docs/BENCHMARKS.md). After
    ``gc.freeze()`` the collections skip those objects. The cost is that a cycle
    among them that becomes garbage later is never freed.
    """
    gc.collect()
    gc.freeze()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run *main* on uvloop's event loop when uvloop is installed, else on asyncio's.

    The relay and the consumers spend much of their time in the event loop (many
    small socket reads and writes), and uvloop does that work in C.
    """
    try:
        import uvloop  # noqa: PLC0415 - optional: not on Windows
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
