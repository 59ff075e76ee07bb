"""End to end: ``seawall serve`` as a real process, over real HTTP, stopped by SIGTERM."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_server import STARTUP_TIMEOUT_SECONDS, Server, clean_environment, seawall_serve

MAX_BODY_BYTES = 4096
REDIS_PASSWORD = "s3cr3tpass"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``seawall serve`` on a free port with a SQLite file in *tmp_path*; always stopped."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    with seawall_serve(
        tmp_path,
        SEAWALL_DATABASE_URL=f"sqlite:///{tmp_path}/s.db",
        SEAWALL_REDIS_URL=f"redis://user:{REDIS_PASSWORD}@127.0.0.1:6379/0",
        SEAWALL_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        # The most verbose level: the most lines that could leak a secret or not be JSON.
        SEAWALL_LOG_LEVEL="debug",
        SEAWALL_SECRETS_DIR=str(secrets),
    ) as running:
        yield running


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line!r}")
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def _correlated(correlation_id: str, **headers: str) -> dict[str, str]:
    return {"X-Correlation-Id": correlation_id, **headers}


def test_serve_answers_the_cases_api_over_http(server: Server) -> None:
    body = {"title": "Refund not received", "priority": "high", "customer_id": "cus_123"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    oversized = {"title": "x", "priority": "low", "metadata": {"blob": "x" * MAX_BODY_BYTES}}

    server.wait_until_ready("smoke-ready")
    with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
        created = http.post("/cases", json=body, headers=key)
        replayed = http.post("/cases", json=body, headers=key)
        case_id = created.json()["id"]
        read = http.get(f"/cases/{case_id}")
        patched = http.patch(
            f"/cases/{case_id}",
            json={"status": "in_progress"},
            headers={"If-Match": read.headers["ETag"]},
        )
        listed = http.get("/cases")
        too_large = http.post("/cases", json=oversized, headers={"Idempotency-Key": "big"})
        docs = http.get("/docs")
        openapi = http.get("/openapi.json")

    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"/cases/{case_id}"
    assert created.headers["ETag"] == '"v1"'
    assert created.json()["status"] == "open"
    assert replayed.status_code == 201
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.content == created.content
    assert replayed.headers["Location"] == created.headers["Location"]
    assert replayed.headers["ETag"] == created.headers["ETag"]
    assert read.status_code == 200
    assert read.json() == created.json()
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "in_progress"
    assert patched.headers["ETag"] == '"v2"'
    assert listed.status_code == 200
    assert [case["id"] for case in listed.json()["data"]] == [case_id]
    assert too_large.status_code == 413
    assert too_large.headers["content-type"] == "application/problem+json"
    assert too_large.json()["status"] == 413
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert openapi.status_code == 200
    assert openapi.json()["info"]["title"] == "seawall cases service"


_NOT_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"GET /cases HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",  # a space in a name
    b"POST /cases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /cases HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
]


def _raw_exchange(base_url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send *request* on a new connection and read the answer until the server closes it."""
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    assert port is not None
    with socket.create_connection((host, port), timeout=10.0) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("request_bytes", _NOT_HTTP, ids=["garbage", "space", "chunk", "length"])
def test_serve_answers_bytes_that_are_not_http_with_a_problem_and_closes(
    server: Server, request_bytes: bytes
) -> None:
    server.wait_until_ready("smoke-ready")

    status, headers, body = _raw_exchange(server.base_url, request_bytes)

    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {
        "type": "urn:seawall:problem:malformed-http",
        "title": "Bad Request",
        "status": 400,
        "detail": "The request is not valid HTTP/1.1; the connection was closed.",
    }
    with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
        assert http.get("/cases").status_code == 200  # the server goes on


def test_serve_stops_cleanly_on_sigterm_with_json_logs_that_carry_ids_and_no_secrets(
    server: Server,
) -> None:
    run = f"smoke-{uuid.uuid4().hex}"
    card_token = f"tok_{uuid.uuid4().hex}"
    body = {"title": "Parcel lost", "priority": "low", "metadata": {"card_token": card_token}}

    server.wait_until_ready(f"{run}-ready")
    with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
        created = http.post(
            "/cases",
            json=body,
            headers=_correlated(f"{run}-create", **{"Idempotency-Key": str(uuid.uuid4())}),
        )
        missing = http.get("/cases/nope", headers=_correlated(f"{run}-missing"))
        listed = http.get("/cases", headers=_correlated(f"{run}-list"))
    exit_code = server.stop()
    stdout, stderr = server.output()

    assert [created.status_code, missing.status_code, listed.status_code] == [201, 404, 200]
    assert missing.headers["X-Correlation-Id"] == f"{run}-missing"
    assert exit_code == 0, stderr
    assert stderr == ""
    records = _json_lines(stdout)
    requests = [r for r in records if r.get("event") == "request_completed"]
    assert {r["correlation_id"] for r in requests} == {
        f"{run}-{step}" for step in ("ready", "create", "missing", "list")
    }
    assert {(r["method"], r["path"], r["status"]) for r in requests} >= {
        ("POST", "/cases", 201),
        ("GET", "/cases/nope", 404),
        ("GET", "/cases", 200),
    }
    assert any(r.get("event") == "service_stopped" for r in records)
    assert REDIS_PASSWORD not in stdout
    assert REDIS_PASSWORD not in stderr
    assert card_token not in stdout


def test_serve_with_a_bad_port_fails_with_one_line_naming_the_key(tmp_path: Path) -> None:
    env = clean_environment(SEAWALL_PORT="abc", SEAWALL_SECRETS_DIR=str(tmp_path))

    result = subprocess.run(
        [sys.executable, "-m", "seawall", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "SEAWALL_PORT" in lines[0]
