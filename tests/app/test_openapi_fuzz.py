"""Schema-driven fuzzing: schemathesis generates requests from the live service's OpenAPI
document (examples, coverage, fuzzing and stateful phases) and no request may get a 5xx.

Complements `test_fuzz.py` (hand-written hypothesis strategies over ASGI): this one
goes over real HTTP to ``seawall serve`` and covers every documented operation. It
drives schemathesis's command line, because its pytest plugin does not support
pytest 9 yet.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import clean_environment, seawall_serve

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def _fuzz(tmp_path: Path, max_examples: int) -> subprocess.CompletedProcess[str]:
    command = shutil.which("schemathesis") or str(SCHEMATHESIS)
    with seawall_serve(tmp_path) as server:
        server.wait_until_ready()
        run = subprocess.run(
            [
                command,
                "run",
                f"{server.base_url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(max_examples),
            ],
            cwd=tmp_path,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        server.stop()
    return run


def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    run = _fuzz(tmp_path, max_examples=25)

    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "passed" in run.stdout


@pytest.mark.slow
def test_many_generated_requests_get_no_server_error(tmp_path: Path) -> None:
    run = _fuzz(tmp_path, max_examples=500)

    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
