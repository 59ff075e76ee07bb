"""How seawall's processes run: uvloop when installed, a frozen start-up heap."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from seawall.process import run


def test_run_returns_the_coroutines_result_on_uvloop() -> None:
    pytest.importorskip("uvloop")

    async def main() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert run(main()).startswith("uvloop")


def test_run_raises_what_the_coroutine_raises() -> None:
    async def main() -> None:
        raise LookupError("inside")

    with pytest.raises(LookupError, match="inside"):
        run(main())


def test_freezing_the_start_up_heap_moves_it_out_of_the_collectors_generations() -> None:
    # In a child process: a frozen heap stays frozen for the rest of the process.
    code = (
        "import gc; from seawall.process import freeze_startup_heap; "
        "import seawall.app; "
        "before = gc.get_freeze_count(); freeze_startup_heap(); "
        "print(before, gc.get_freeze_count(), sum(gc.get_count()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    before, frozen, tracked = (int(value) for value in out)

    assert before == 0
    assert frozen > 50_000  # SQLAlchemy, pydantic, FastAPI, the app's modules
    assert tracked < 1_000  # the generations start again from (almost) nothing
