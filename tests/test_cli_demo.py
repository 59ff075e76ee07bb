"""``seawall demo``: the whole scenario as a user runs it, and its care for the folder it wipes.

The end-to-end run is a subprocess (``python -m seawall demo --exit --port 0``):
the demo starts its fakes on threads, ``seawall serve`` as a child process and
configures process-wide logging, none of which belongs in the test process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from seawall.cli import app
from tests.live_server import clean_environment

DEMO_TIMEOUT_SECONDS = 120
STEPS = [
    "Idempotent case creation",
    "Payment gateway outage",
    "Duplicate webhooks",
    "Early Stripe event",
    "Fan-out to two consumer groups",
    "Poison message and replay",
    "Secrets stay out of the logs",
]


def test_demo_plays_every_step_and_passes(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    # A wide console keeps each summary row on one line; the bogus database URL proves
    # the demo runs on its own embedded default whatever SEAWALL_* says.
    environment = clean_environment(
        COLUMNS="240", SEAWALL_DATABASE_URL="postgresql://demo.invalid:5432/nowhere"
    )

    result = subprocess.run(
        [sys.executable, "-m", "seawall", "demo", "--exit", "--port", "0", "--dir", str(folder)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"All {len(STEPS)} steps passed." in output
    for number, title in enumerate(STEPS, 1):
        row = re.search(rf"^\W+{number}\W+{re.escape(title)}\W.*\W(\w[\w ]*\w)\W+$", output, re.M)
        assert row is not None, f"no summary row for {title!r}:\n{output}"
        assert row[1] == "passed", row[0]
    assert "Traceback" not in output
    assert re.search(r"^Console:\s+http://127\.0\.0\.1:\d+/console$", output, re.M), output
    key = re.search(r"^Admin key:\s+(sw_\w+_\S+)$", output, re.M)
    assert key is not None, output
    service_log = (folder / "service.log").read_text()
    assert "Traceback" not in service_log
    assert key[1] not in service_log
    assert (folder / "seawall.db").is_file()


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")

    result = CliRunner().invoke(app, ["demo", "--exit", "--port", "0", "--dir", str(tmp_path)])

    assert result.exit_code == 1, result.output
    assert "did not make" in result.output
    assert precious.read_text() == "keep me"
