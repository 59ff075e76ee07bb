"""The documentation runs as written: README.md and docs/*.md.

- Every ```python block runs in a fresh namespace, in an empty working directory,
  without the caller's ``SEAWALL_*`` variables; top-level ``await`` is allowed.
- The README's quickstart is exactly ``make run`` and ``make test``.
- The README's walk-through runs against a live ``seawall serve``, and every
  command shown with a status line answers with that status.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.live_server import clean_environment, free_port, seawall_serve

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
# A fenced block; the first word of its info string is the language.
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
DOCUMENTED_BASE_URL = "http://127.0.0.1:8000"
WALKTHROUGH_TIMEOUT_SECONDS = 120.0


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"README.md has no '## {heading}' section"
    return match[1]


def _python_blocks() -> list[pytest.ParameterSet]:
    blocks = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for fence in FENCE.finditer(text):
            if fence["lang"] == "python":
                line = text.count("\n", 0, fence.start("body")) + 1
                name = f"{path.relative_to(ROOT).as_posix()}:{line}"
                blocks.append(pytest.param(path, line, fence["body"], id=name))
    return blocks


@pytest.mark.parametrize(("path", "line", "source"), _python_blocks())
def test_python_block_runs(
    path: Path, line: int, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in set(os.environ) - set(clean_environment()):
        monkeypatch.delenv(name)
    # Blank lines in front keep line numbers, so a traceback points into the document.
    code = compile(
        "\n" * (line - 1) + source,
        str(path),
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )

    # With top-level await allowed, eval returns a coroutine when the block awaits.
    result = eval(code, {"__name__": "__main__"})  # noqa: S307 - runs our own docs on purpose
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(result)


def test_readme_quickstart_is_make_run_then_make_test() -> None:
    quickstart = _section(README.read_text(encoding="utf-8"), "Quickstart")

    commands = [
        line.strip().removeprefix("$ ")
        for fence in FENCE.finditer(quickstart)
        for line in fence["body"].splitlines()
        if line.strip()
    ]

    assert commands == ["make run", "make test"]


def _walkthrough_steps() -> list[tuple[str, int | None]]:
    """Each ``$`` command of the walk-through, with the status its shown output starts with."""
    steps: list[tuple[str, int | None]] = []
    section = _section(README.read_text(encoding="utf-8"), "Walk-through")
    for fence in FENCE.finditer(section):
        lines = iter(fence["body"].splitlines() if fence["lang"] == "console" else [])
        for line in lines:
            if line.startswith("$ "):
                command = [line[2:]]
                while command[-1].endswith("\\"):
                    command.append(next(lines))
                steps.append(("\n".join(command), None))
            elif steps and steps[-1][1] is None and (shown := re.match(r"HTTP/1\.1 (\d{3})", line)):
                steps[-1] = (steps[-1][0], int(shown[1]))
    return steps


def _first_status(output: str) -> int | None:
    statuses = [int(s) for s in re.findall(r"^HTTP/1\.1 (\d{3})", output, re.M) if s != "100"]
    return statuses[0] if statuses else None


def test_readme_walkthrough_answers_as_shown(tmp_path: Path) -> None:
    if shutil.which("curl") is None or shutil.which("jq") is None:
        reason = "the README walk-through needs curl and jq on PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI=true: nothing may pass by skipping)")
        pytest.skip(reason)
    steps = _walkthrough_steps()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    script = "".join(
        f"{command.replace(DOCUMENTED_BASE_URL, base_url)}\necho; echo '@@step@@'\n"
        for command, _ in steps
    )
    with seawall_serve(tmp_path, port=port) as server:
        server.wait_until_ready()
        run = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=WALKTHROUGH_TIMEOUT_SECONDS,
            check=False,
        )
        server.stop()
    outputs = run.stdout.replace("\r", "").split("@@step@@\n")

    assert len(outputs) == len(steps) + 1, run.stderr
    shown = [(i, cmd.splitlines()[0], st) for i, (cmd, st) in enumerate(steps) if st]
    answered = [(i, steps[i][0].splitlines()[0], _first_status(outputs[i])) for i, _, _ in shown]
    assert answered == shown, run.stderr


def test_readme_lists_every_setting() -> None:
    from seawall.config import ENV_PREFIX, Settings

    configuration = _section(README.read_text(encoding="utf-8"), "Configuration")
    documented = set(re.findall(r"^\| `(SEAWALL_[A-Z_]+)` \|", configuration, re.M))

    assert {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} <= documented


def test_the_configuration_reference_is_generated_from_the_settings() -> None:
    from seawall._config_reference import reference_markdown

    written = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")

    assert written == reference_markdown(), "run: seawall config reference > docs/configuration.md"


def test_every_setting_says_what_it_does() -> None:
    from seawall._config_reference import reference_rows

    rows = reference_rows()

    assert [row.variable for row in rows if not row.description] == []
    assert {"SEAWALL_SERVICES__<NAME>__BASE_URL", "SEAWALL_SYNC__CRM__PAGE_SIZE"} <= {
        row.variable for row in rows
    }
    secrets = {row.variable for row in rows if row.secret}
    assert {"SEAWALL_DATABASE_URL", "SEAWALL_WEBHOOKS__<NAME>__SECRETS"} <= secrets
    assert "SEAWALL_HOST" not in secrets
