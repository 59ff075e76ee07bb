"""Webhook ingest: `seawall serve` taking signed GitHub deliveries at rising rates, vs bare FastAPI.

Usage: .venv/bin/python bench/webhook_ingest.py [--seconds 5] [--variants bare,pg,pg_nats,...]
       .venv/bin/python bench/webhook_ingest.py --quick    # a small run that checks it all works
Needs PostgreSQL (a role that may create databases; --postgres) and, for ``pg_nats``,
NATS with JetStream (--nats), both on loopback. Each seawall variant gets a database
(``seawall_bench_ingest_*``) or a SQLite file of its own and, with NATS, the streams
``SWBENCH_INGEST``/``SWBENCH_INGEST_DLQ``; all are dropped and deleted afterwards, also
when the run fails or is interrupted (and those a killed run left behind, at start).

What runs, each target in turn, in one run:

- the server, a real subprocess: ``python -m seawall serve`` on a free port with
  ``SEAWALL_LOG_LEVEL=warning`` (``info`` in ``pg_info``: one JSON line per request,
  to a file), the provider ``github`` with a secret and a rate limit of 1,000,000/s,
  and the outbox relay and the worker off (``pg``, ``sqlite``: ingest alone) or on
  (``pg_nats``: relayed to NATS JetStream while ingesting; ``sqlite_embedded``: the
  embedded default, an in-process bus); PostgreSQL is migrated with ``seawall
  migrate`` first, SQLite at start-up. The baseline, ``bare``, is a FastAPI app in
  this file with one ``POST /webhooks/{provider}`` route that reads the body and
  answers ``{"status": "accepted"}``, run by uvicorn with the settings ``seawall
  serve`` uses (same loop and HTTP implementation, no access log, no server header);
- the load generator, a process of its own (spawned, so it shares no GIL with the
  server): a small HTTP/1.1 keep-alive client on asyncio protocols. Before a step is
  timed it builds and signs every request of the step: a ~2 KB GitHub ``push``
  payload (unique: a fresh delivery id and commit ids), ``X-GitHub-Event: push``
  (no handler creates cases from it), ``X-GitHub-Delivery`` and
  ``X-Hub-Signature-256``. It then sends them open loop: request *i* is due at
  ``t0 + i / rate`` whether or not earlier ones were answered, on an idle
  connection (``--connections`` are open at the start), else on a new one (up to
  ``--max-connections``; past that it waits, and is counted as a "cap" wait);
- a step: ``--warmup`` seconds of load then ``--seconds`` measured, at rates
  100, 200, 400, 700, 1,000, 1,500, ... (``--rates``) until one is not sustained,
  then ``--refine`` bisections between the last sustained rate and the first that
  was not. The acknowledgement latency of a request is from the moment its bytes
  are written to the moment its whole answer is read: what the sender waits for.
  Beside it, how late the request was written (the client's own lag, or a wait for
  a connection) and, for the rule below, due time to answer: a server that falls
  behind shows there even when each answer, once sent for, comes fast;
- sustained: every request of the step (warm-up included) answered 200
  ``{"status": "accepted"...}`` (no other status, no timeout after ``--timeout``
  seconds, no dropped connection), the accepted rate over the measured part at
  least 95 % of the offered one, and p99 from due time to answer under 1 s;
- then, at half the highest sustained rate and at 1,000/s (taken from the ramp
  when it ran there), p50 and p99 of the acknowledgement latency;
- CPU per request, from /proc: the server process (all its threads), the load
  generator, all ``postgres`` processes and ``nats-server``, over each whole step;
  and the cores the rest of the machine used meanwhile: a step during which other
  processes used more than ``--noise`` cores is run again (``--noisy-retries``);
- after a seawall run, the rows in ``webhook_events`` against the accepted answers
  (every 200 must be a stored row; more rows than answers only after a timeout).

Prints a line per step, a table (the bare endpoint is the baseline of the same run:
``ratio = seawall / bare``, on the highest sustained rate), then the issue's targets.

``--receiver 1,5,50`` measures instead, in this process and without HTTP,
``WebhookReceiver.receive`` on PostgreSQL (a fresh database): the same signed
deliveries handed over N at a time (``asyncio.gather``, so N share a group
commit), ``--receiver-deliveries`` of them per N; it prints the process CPU per
delivery, which is what the group commit's transaction costs when shared by N.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import hmac
import http.client
import importlib.util
import json
import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats
import nats.js.errors
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

HMAC_KEY = "bench-github-webhook-key"
PROVIDER = "github"
STREAM = "SWBENCH_INGEST"
DATABASE_PREFIX = "seawall_bench_ingest_"
RAMP = (100, 200, 400, 700, 1_000, 1_500, 2_000, 3_000, 4_000, 6_000, 8_000, 12_000)
QUICK_RAMP = (200, 600, 1_000)
LATENCY_RATE = 1_000

# Answer codes besides HTTP statuses: a 200 that is not "accepted", and failures.
NOT_ACCEPTED_200 = 1200
DROPPED = -1
TIMED_OUT = -2
CONNECT_FAILED = -3
FAILURE_NAMES = {
    NOT_ACCEPTED_200: "200-not-accepted",
    DROPPED: "dropped",
    TIMED_OUT: "timeout",
    CONNECT_FAILED: "no-connect",
}

# --- the baseline: a bare FastAPI endpoint --------------------------------------------------------

bare_app = FastAPI(title="bare webhook endpoint")


@bare_app.post("/webhooks/{provider}")
async def bare_receive(provider: str, request: Request) -> JSONResponse:
    """Read the body and accept it: what any endpoint does before its own work."""
    await request.body()
    return JSONResponse({"status": "accepted"})


@bare_app.get("/health/ready")
async def bare_ready() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def serve_bare(port: int) -> None:
    """Run `bare_app` as ``seawall serve`` runs its app (see `seawall.cli.serve`)."""
    import uvicorn

    uvicorn.run(
        bare_app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )


# --- deliveries -----------------------------------------------------------------------------------

_REPOSITORY = {
    "id": 35129377,
    "node_id": "MDEwOlJlcG9zaXRvcnkzNTEyOTM3Nw==",
    "name": "public-repo",
    "full_name": "baxterthehacker/public-repo",
    "private": False,
    "owner": {"name": "baxterthehacker", "email": "baxterthehacker@users.noreply.github.com"},
    "html_url": "https://github.com/baxterthehacker/public-repo",
    "description": "",
    "fork": False,
    "url": "https://github.com/baxterthehacker/public-repo",
    "git_url": "git://github.com/baxterthehacker/public-repo.git",
    "ssh_url": "git@github.com:baxterthehacker/public-repo.git",
    "clone_url": "https://github.com/baxterthehacker/public-repo.git",
    "homepage": None,
    "size": 0,
    "stargazers_count": 0,
    "watchers_count": 0,
    "language": None,
    "default_branch": "main",
    "master_branch": "main",
    "pushed_at": 1430869217,
    "created_at": 1430869212,
}


def push_payload(index: int) -> bytes:
    """A GitHub ``push`` delivery of about 2 KB, unique by its commit ids."""
    after = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    before = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    author = {
        "name": "baxterthehacker",
        "email": "baxterthehacker@users.noreply.github.com",
        "username": "baxterthehacker",
    }
    payload = {
        "ref": "refs/heads/changes",
        "before": before,
        "after": after,
        "created": False,
        "deleted": False,
        "forced": False,
        "compare": f"https://github.com/baxterthehacker/public-repo/compare/{before[:12]}...{after[:12]}",
        "commits": [
            {
                "id": after,
                "tree_id": before,
                "distinct": True,
                "message": f"Update README.md (bench delivery {index})",
                "timestamp": "2015-05-05T19:40:15-04:00",
                "url": f"https://github.com/baxterthehacker/public-repo/commit/{after}",
                "author": author,
                "committer": author,
                "added": [],
                "removed": [],
                "modified": ["README.md"],
            }
        ],
        "head_commit": None,
        "repository": _REPOSITORY,
        "pusher": {"name": "baxterthehacker", "email": "baxterthehacker@users.noreply.github.com"},
        "sender": {
            "login": "baxterthehacker",
            "id": 6752317,
            "avatar_url": "https://avatars.githubusercontent.com/u/6752317?v=3",
            "type": "User",
            "site_admin": False,
        },
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def signed_request(host: str, index: int) -> bytes:
    """The whole HTTP/1.1 request of one delivery, signed as GitHub signs it."""
    body = push_payload(index)
    signature = hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
    head = (
        f"POST /webhooks/{PROVIDER} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "User-Agent: GitHub-Hookshot/bench\r\n"
        "Accept: */*\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-GitHub-Event: push\r\n"
        f"X-GitHub-Delivery: {uuid.uuid4()}\r\n"
        "X-GitHub-Hook-ID: 292430182\r\n"
        "X-GitHub-Hook-Installation-Target-Type: repository\r\n"
        f"X-Hub-Signature-256: sha256={signature}\r\n"
        "\r\n"
    )
    return head.encode() + body


# --- the load generator (a process of its own) ----------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answers parsed as they come."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: Any = None
        self.buffer = bytearray()
        self.index = -1

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:  # uvicorn always sends one for these answers; anything else is a failure
            self.transport.abort()
            return
        stop = head.find(b"\r\n", at + 2)
        total = end + 4 + int(head[at + 17 : stop if stop >= 0 else None])
        if len(buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(buffer[end + 4 : total])
        del buffer[:total]
        index, self.index = self.index, -1
        if index >= 0:
            self.pool.answered(self, index, status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)


class _Pool:
    """Sends request *i* on an idle connection, or a new one, or after the others (the cap)."""

    def __init__(
        self, host: str, port: int, requests: list[bytes], *, cap: int, timeout: float
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.requests = requests
        self.cap, self.timeout = cap, timeout
        count = len(requests)
        self.sent = [0.0] * count
        self.done = [0.0] * count
        self.status = [0] * count
        self.idle: collections.deque[_Connection] = collections.deque()
        self.busy: set[_Connection] = set()
        self.backlog: collections.deque[int] = collections.deque()
        self.connections = 0
        self.peak = 0
        self.cap_waits = 0
        self.outstanding = 0
        self.all_submitted = False
        self.closing = False
        self.drained = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> _Connection:
        """Open a connection; the caller has counted it in ``connections`` already."""
        try:
            _, connection = await self.loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError:
            self.connections -= 1
            raise
        return connection

    def _count_one(self) -> None:
        self.connections += 1
        self.peak = max(self.peak, self.connections)

    async def open(self, count: int) -> None:
        for _ in range(count):
            self._count_one()
            self.idle.append(await self.connect())

    def submit(self, index: int) -> None:
        self.outstanding += 1
        if self.idle:
            self._send(self.idle.popleft(), index)
            return
        self.backlog.append(index)
        if self.connections < self.cap:
            self._grow()
        else:
            self.cap_waits += 1

    def finish_submitting(self) -> None:
        self.all_submitted = True
        if self.outstanding == 0:
            self.drained.set()

    def _grow(self) -> None:
        self._count_one()
        task = self.loop.create_task(self._add_connection())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _add_connection(self) -> None:
        try:
            connection = await self.connect()
        except OSError:
            if self.backlog:
                self._fail(self.backlog.popleft(), CONNECT_FAILED)
            return
        self._next(connection)

    def _send(self, connection: _Connection, index: int) -> None:
        connection.index = index
        self.busy.add(connection)
        self.sent[index] = time.perf_counter()
        connection.transport.write(self.requests[index])

    def _next(self, connection: _Connection) -> None:
        if self.backlog:
            self._send(connection, self.backlog.popleft())
        else:
            self.idle.append(connection)

    def _settle(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and self.all_submitted:
            self.drained.set()

    def _fail(self, index: int, code: int) -> None:
        self.done[index] = time.perf_counter()
        self.status[index] = code
        self._settle()

    def answered(self, connection: _Connection, index: int, status: int, body: bytes) -> None:
        self.done[index] = time.perf_counter()
        if status == 200 and b'"accepted"' not in body:
            status = NOT_ACCEPTED_200
        self.status[index] = status
        self.busy.discard(connection)
        self._settle()
        self._next(connection)

    def lost(self, connection: _Connection) -> None:
        self.connections -= 1
        self.busy.discard(connection)
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)
        if connection.index >= 0:
            index, connection.index = connection.index, -1
            self._fail(index, DROPPED)
        if self.backlog and self.connections < self.cap and not self.closing:
            self._grow()

    def expire(self) -> None:
        """Give up on requests sent more than *timeout* seconds ago (and on their connections)."""
        now = time.perf_counter()
        for connection in list(self.busy):
            if now - self.sent[connection.index] > self.timeout:
                index, connection.index = connection.index, -1
                self.busy.discard(connection)
                self._fail(index, TIMED_OUT)
                connection.transport.abort()

    def close(self) -> None:
        self.closing = True
        for connection in [*self.idle, *self.busy]:
            connection.transport.close()


async def _watch(pool: _Pool) -> None:
    while True:
        await asyncio.sleep(0.1)
        pool.expire()


async def offer(pool: _Pool, rate: float, t0: float) -> None:
    """Submit request *i* at ``t0 + i / rate`` (open loop), whatever came back so far."""
    index, count = 0, len(pool.requests)
    while index < count:
        now = time.perf_counter()
        due = t0 + index / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while index < count and t0 + index / rate <= now:
            pool.submit(index)
            index += 1
    pool.finish_submitting()


async def run_step(pipe: Any, host: str, port: int, job: dict[str, Any]) -> dict[str, Any]:
    """Build and sign the step's requests, say "started", send them, summarise the answers."""
    rate, warm = job["rate"], round(job["rate"] * job["warmup"])
    count = warm + round(rate * job["seconds"])
    requests = [signed_request(f"{host}:{port}", i) for i in range(count)]
    pool = _Pool(host, port, requests, cap=job["max_connections"], timeout=job["timeout"])
    await pool.open(job["connections"])
    pipe.send("started")
    cpu = time.process_time()
    watcher = asyncio.create_task(_watch(pool))
    t0 = time.perf_counter() + 0.01
    await offer(pool, rate, t0)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(job["timeout"] + 5):
            await pool.drained.wait()
    watcher.cancel()
    cpu = time.process_time() - cpu
    pool.close()
    await asyncio.sleep(0.05)  # let the closes go out before the next step

    codes = collections.Counter(pool.status)
    measured = [i for i in range(warm, count) if pool.status[i] > 0]  # answered
    latencies = sorted(pool.done[i] - pool.sent[i] for i in measured)
    overdue = sorted(pool.done[i] - (t0 + i / rate) for i in measured)
    late = sorted(pool.sent[i] - (t0 + i / rate) for i in measured)
    accepted = [i for i in range(warm, count) if pool.status[i] == 200]
    achieved = 0.0
    if accepted:
        span = max(pool.done[i] for i in accepted) - (t0 + warm / rate)
        achieved = len(accepted) / max(span, 1e-9)
    return {
        "rate": rate,
        "requests": count,
        "offered": count - warm,
        "accepted": len(accepted),
        "accepted_all": codes.get(200, 0),
        "failures": {str(code): n for code, n in codes.items() if code != 200},
        "latencies": latencies,
        "achieved": achieved,
        "late_p99": percentile(late, 99),
        "due_p99": percentile(overdue, 99),
        "cap_waits": pool.cap_waits,
        "peak_connections": pool.peak,
        "client_cpu": cpu,
        "body_bytes": len(requests[0]) if requests else 0,
    }


def loadgen_main(pipe: Any, host: str, port: int) -> None:
    """The load generator's process: run each step it is sent until told to stop."""

    async def main() -> None:
        while True:
            job = pipe.recv()
            if job is None:
                return
            pipe.send(await run_step(pipe, host, port, job))

    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        asyncio.run(main())


# --- processes and services -----------------------------------------------------------------------


def percentile(ordered: list[float], pct: float) -> float:
    """The *pct* percentile of an already sorted list (nearest rank); 0 when empty."""
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of process *pid*, all its threads; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def pids_named(name: str, *, keep: Callable[[str], bool] | None = None) -> list[int]:
    """Processes called *name* (and whose command line *keep* accepts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() != name:
                    continue
                if keep is None or keep((entry / "cmdline").read_text(errors="replace")):
                    found.append(int(entry.name))
    return found


def ours_or_shared(database: str | None) -> Callable[[str], bool]:
    """PostgreSQL's shared processes (WAL writer, checkpointer...) and *database*'s backends.

    Backends of other databases (another test run) are not ours: their CPU counts
    as "other", the noise.
    """

    def keep(cmdline: str) -> bool:
        client = "127.0.0.1(" in cmdline or "[local]" in cmdline or "::1(" in cmdline
        return not client or (database is not None and f" {database} " in cmdline)

    return keep


class CpuMeter:
    """CPU seconds spent by the server, PostgreSQL and nats-server between two readings.

    PostgreSQL backends that start between the readings (a pool growing under load)
    count from zero; those that end in between are missed (the pool keeps them).
    """

    def __init__(self, server_pid: int, database: str | None) -> None:
        self.server_pid = server_pid
        self.keep = ours_or_shared(database)
        self.start: dict[str, dict[int, float]] = {}

    def _read(self) -> dict[str, dict[int, float]]:
        groups = {
            "server": [self.server_pid],
            "postgres": pids_named("postgres", keep=self.keep),
            "nats": pids_named("nats-server"),
        }
        return {name: {pid: cpu_of(pid) for pid in pids} for name, pids in groups.items()}

    def begin(self) -> None:
        self.start = self._read()
        self.machine, self.wall = machine_cpu(), time.monotonic()

    def end(self, client: float) -> dict[str, float]:
        """CPU seconds by group; ``other``: the rest of the machine's, in cores (noise)."""
        spent = {
            name: sum(max(0.0, cpu - self.start[name].get(pid, 0.0)) for pid, cpu in now.items())
            for name, now in self._read().items()
        }
        spent["client"] = client
        machine = machine_cpu() - self.machine
        wall = max(time.monotonic() - self.wall, 1e-9)
        spent["other_cores"] = max(0.0, machine - sum(spent.values())) / wall
        return spent


def machine_cpu() -> float:
    """CPU seconds all processes of the machine spent in user and system mode (/proc/stat).

    Interrupt time is left out: loopback traffic's softirq work is the run's own.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system = (int(value) for value in fields[1:4])
    return (user + nice + system) / _TICK


class Server:
    """A server subprocess, its output in a file; stopped with SIGTERM, then killed."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, port: int) -> None:
        self.argv, self.env, self.cwd, self.port = argv, env, cwd, port
        self.log_path = cwd / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, ready_timeout: float = 60.0) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.tail()}")
            if self.get("/health/ready") == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready within {ready_timeout:g} s:\n{self.tail()}")

    def get(self, path: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        except OSError:
            return 0
        finally:
            connection.close()

    def wait_quiet(self, *, busy: float = 0.15, limit: float = 30.0) -> None:
        """Wait until the server uses under *busy* of a core (it may still be catching up)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = cpu_of(self.pid)
            time.sleep(0.5)
            if (cpu_of(self.pid) - before) / 0.5 < busy:
                return

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class LoadGenerator:
    """`loadgen_main` in a spawned process, driven step by step through a pipe."""

    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(
            target=loadgen_main, args=(theirs, "127.0.0.1", port), daemon=True
        )
        self.process.start()
        theirs.close()  # ours alone sees EOF if the child dies

    def _receive(self, timeout: float) -> Any:
        if not self.pipe.poll(timeout):
            raise RuntimeError(f"the load generator said nothing within {timeout:g} s")
        return self.pipe.recv()

    def step(self, job: dict[str, Any], on_start: Callable[[], None]) -> dict[str, Any]:
        self.pipe.send(job)
        if self._receive(300) != "started":
            raise RuntimeError("the load generator did not start the step")
        on_start()
        result: dict[str, Any] = self._receive(job["warmup"] + job["seconds"] + job["timeout"] + 60)
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.pipe.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def postgres_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


async def postgres_fetch(url: str, *queries: str) -> list[Any]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return [await conn.fetch(query) for query in queries]
    finally:
        await conn.close()


def postgres(url: str, *queries: str) -> list[Any]:
    return asyncio.run(postgres_fetch(url, *queries))


def drop_leftovers(admin_url: str) -> None:
    """Drop the databases a killed run of this benchmark left behind."""
    (rows,) = postgres(
        admin_url,
        "SELECT datname FROM pg_database WHERE datname LIKE 'seawall\\_bench\\_ingest\\_%'",
    )
    for row in rows:
        postgres(admin_url, f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(admin_url: str, tag: str) -> Iterator[str]:
    """A new, empty database ``seawall_bench_ingest_<tag>``; its URL; dropped afterwards."""
    name = f"{DATABASE_PREFIX}{tag}"
    drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    postgres(admin_url, drop, f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url(admin_url, name)
    finally:
        postgres(admin_url, drop)


async def _nats_streams(nats_url: str, *, delete: bool) -> dict[str, Any]:
    """Our streams' message counts (deleting them when asked) and other streams' subjects."""
    nc = await nats.connect(nats_url, name="seawall-bench-ingest", connect_timeout=2)
    try:
        js = nc.jetstream()
        found: dict[str, Any] = {}
        for info in await js.streams_info():
            name = info.config.name
            if name in {STREAM, f"{STREAM}_DLQ"}:
                found[name] = info.state.messages
                if delete:
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        await js.delete_stream(name)
            else:
                found.setdefault("others", []).extend(info.config.subjects or [])
        return found
    finally:
        await nc.close()


def nats_streams(nats_url: str, *, delete: bool) -> dict[str, Any]:
    return asyncio.run(_nats_streams(nats_url, delete=delete))


# --- variants and steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    database: str | None  # "pg", "sqlite" or None (the bare endpoint)
    messaging: bool = False  # relay and worker inside the server
    log_level: str = "warning"


VARIANTS = {
    variant.key: variant
    for variant in (
        Variant("bare", "bare FastAPI endpoint (baseline)", None),
        Variant("pg", "seawall, PostgreSQL, ingest only", "pg"),
        Variant("pg_nats", "seawall, PostgreSQL + relay/worker, NATS", "pg", messaging=True),
        Variant("pg_info", "seawall, PostgreSQL, ingest, log INFO", "pg", log_level="info"),
        Variant("sqlite", "seawall, SQLite, ingest only", "sqlite"),
        Variant("sqlite_embedded", "seawall, SQLite + relay/worker in-process", "sqlite", True),
    )
}


@dataclass
class Step:
    rate: float
    result: dict[str, Any]
    cpu: dict[str, float]

    @property
    def latencies(self) -> list[float]:
        return list(self.result["latencies"])

    def p(self, pct: float) -> float:
        return percentile(self.result["latencies"], pct)

    @property
    def failures(self) -> int:
        return sum(self.result["failures"].values())

    @property
    def sustained(self) -> bool:
        """All accepted, >= 95 % of the offered rate achieved, p99 under a second."""
        return (
            self.failures == 0
            and bool(self.result["latencies"])
            and self.result["achieved"] >= 0.95 * self.rate
            and self.result["due_p99"] < 1.0
        )

    def cpu_ms(self, name: str) -> float:
        """Milliseconds of CPU per request of the step."""
        return self.cpu.get(name, 0.0) / max(1, self.result["requests"]) * 1e3


@dataclass
class Outcome:
    variant: Variant
    steps: list[Step] = field(default_factory=list)
    best: Step | None = None
    half: Step | None = None
    at_latency_rate: Step | None = None
    stored: str = ""
    lost: bool = False
    error: str | None = None

    @property
    def max_rate(self) -> float:
        return self.best.rate if self.best else 0.0


def round_rate(rate: float) -> int:
    unit = 50 if rate >= 1_000 else 10
    return max(unit, round(rate / unit) * unit)


def print_step(step: Step, note: str = "") -> None:
    r = step.result
    failures = ",".join(
        f"{FAILURE_NAMES.get(int(code), code)}:{n}" for code, n in sorted(r["failures"].items())
    )
    print(
        f"  {step.rate:>7,.0f} {r['achieved']:>9,.0f} {step.p(50) * 1e3:>8.2f} "
        f"{step.p(99) * 1e3:>8.2f} {max(r['latencies'], default=0) * 1e3:>8.1f} "
        f"{r['late_p99'] * 1e3:>7.2f} {r['due_p99'] * 1e3:>8.1f} "
        f"{r['cap_waits']:>5} {r['peak_connections']:>5}  "
        f"{step.cpu_ms('server'):>6.3f} {step.cpu_ms('client'):>6.3f} "
        f"{step.cpu_ms('postgres'):>6.3f} {step.cpu_ms('nats'):>6.3f} "
        f"{step.cpu['other_cores']:>5.2f}  "
        f"{'sustained' if step.sustained else 'NOT sustained'}"
        f"{'  failed ' + failures if failures else ''}{note}"
    )


STEP_HEADER = (
    f"  {'offered':>7} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
    f"{'late99':>7} {'due99':>8} {'cap':>5} {'conns':>5}  "
    "CPU ms per request: server client postgres nats; other (cores)"
)


class Runner:
    """Runs the steps of one target: the ramp, the bisection, the latency steps."""

    def __init__(
        self,
        options: argparse.Namespace,
        server: Server,
        load: LoadGenerator,
        database: str | None,
    ) -> None:
        self.options, self.server, self.load = options, server, load
        self.database = database
        self.accepted_all = 0
        self.ran: dict[float, Step] = {}

    def step(self, rate: float, note: str = "") -> Step:
        options = self.options
        meter = CpuMeter(self.server.pid, self.database)
        job = {
            "rate": float(rate),
            "seconds": options.seconds,
            "warmup": options.warmup,
            "connections": options.connections,
            "max_connections": options.max_connections,
            "timeout": options.timeout,
        }
        for attempt in range(options.noisy_retries + 1):
            result = self.load.step(job, meter.begin)
            step = Step(float(rate), result, meter.end(result["client_cpu"]))
            self.accepted_all += result["accepted_all"]
            noisy = step.cpu["other_cores"] > options.noise
            again = noisy and attempt < options.noisy_retries
            print_step(step, note + ("  (other processes were busy: again)" if again else ""))
            self.server.wait_quiet()
            if not again:
                break
        self.ran[step.rate] = step
        return step

    def ramp(self, outcome: Outcome) -> None:
        last_good: Step | None = None
        first_bad: Step | None = None
        for rate in self.options.rates:
            step = self.step(rate)
            outcome.steps.append(step)
            if not step.sustained:
                first_bad = step
                break
            last_good = step
        if last_good is not None and first_bad is not None:
            low, high = last_good.rate, first_bad.rate
            for _ in range(self.options.refine):
                middle = round_rate((low + high) / 2)
                if middle <= low or middle >= high:
                    break
                step = self.step(middle, "  (bisection)")
                outcome.steps.append(step)
                if step.sustained:
                    low, last_good = middle, step
                else:
                    high = middle
        outcome.best = last_good

    def latency(self, outcome: Outcome) -> None:
        if outcome.best is None:
            return
        half = round_rate(outcome.best.rate / 2)
        outcome.half = self.ran.get(half) or self.step(half, "  (half the maximum)")
        if LATENCY_RATE in self.ran:
            outcome.at_latency_rate = self.ran[LATENCY_RATE]
        elif outcome.best.rate >= LATENCY_RATE:
            outcome.at_latency_rate = self.step(LATENCY_RATE, f"  (at {LATENCY_RATE:,}/s)")


def server_env(variant: Variant, port: int, database_url: str, options: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAWALL_")}
    env.update(
        {
            "SEAWALL_HOST": "127.0.0.1",
            "SEAWALL_PORT": str(port),
            "SEAWALL_DATABASE_URL": database_url,
            "SEAWALL_LOG_LEVEL": variant.log_level,
            "SEAWALL_RELAY": str(variant.messaging).lower(),
            "SEAWALL_WORKER": str(variant.messaging).lower(),
            "SEAWALL_WEBHOOKS__GITHUB__SECRETS": HMAC_KEY,
            "SEAWALL_WEBHOOKS__GITHUB__RATE_LIMIT": "1000000/second",
        }
    )
    if uses_nats(variant):
        env["SEAWALL_NATS_URL"] = options.nats
        env["SEAWALL_NATS_STREAM"] = STREAM
    return env


def stored_rows_postgres(url: str, variant: Variant) -> tuple[int, str]:
    """Rows in ``webhook_events`` (and, with messaging, how far they went)."""
    events, statuses, outbox = postgres(
        url,
        "SELECT count(*) AS n FROM webhook_events",
        "SELECT status, count(*) AS n FROM webhook_events GROUP BY status ORDER BY status",
        "SELECT count(*) AS n, count(published_at) AS published FROM outbox",
    )
    rows = int(events[0]["n"])
    extra = f"; outbox {outbox[0]['n']:,} rows"
    if variant.messaging:
        extra += f", {outbox[0]['published']:,} published; webhook_events " + ", ".join(
            f"{row['status']} {row['n']:,}" for row in statuses
        )
    return rows, extra


def stored_rows_sqlite(path: Path) -> tuple[int, str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0]
        outbox, published = conn.execute(
            "SELECT count(*), count(published_at) FROM outbox"
        ).fetchone()
    finally:
        conn.close()
    return int(rows), f"; outbox {outbox:,} rows, {published:,} published"


def wait_outbox_drained(url: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        (rows,) = postgres(url, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        if rows[0]["n"] == 0:
            return
        time.sleep(0.5)


def start_server(
    variant: Variant, options: argparse.Namespace, stack: contextlib.ExitStack, directory: Path
) -> tuple[Server, str]:
    """Start *variant*'s server on a free port; its database URL (PostgreSQL) or ``""``.

    Everything it sets up (database, streams, the process) is undone by *stack*.
    """
    port = free_port()
    python = sys.executable
    url = ""
    if variant.database is None:
        argv = [python, str(Path(__file__).resolve()), "--serve-bare", str(port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEAWALL_")}
    else:
        if variant.database == "pg":
            url = stack.enter_context(fresh_database(options.postgres, variant.key))
            database_url = url
        else:
            database_url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
        env = server_env(variant, port, database_url, options)
        if uses_nats(variant):
            nats_streams(options.nats, delete=True)
            stack.callback(nats_streams, options.nats, delete=True)
        if variant.database == "pg":
            subprocess.run(  # noqa: S603 - our own interpreter and arguments
                [python, "-m", "seawall", "migrate"],
                env=env,
                cwd=directory,
                check=True,
                capture_output=True,
            )
        argv = [python, "-m", "seawall", "serve"]
    # cwd is the temporary directory: no stray .env file is read.
    server = Server(argv, env, directory, port)
    stack.callback(server.stop)
    server.start()
    return server, url


def uses_nats(variant: Variant) -> bool:
    return variant.messaging and variant.database == "pg"


def run_variant(variant: Variant, options: argparse.Namespace) -> Outcome:
    outcome = Outcome(variant)
    print(f"\n{variant.label} [{variant.key}]")
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swbench-ingest-")))
        server, url = start_server(variant, options, stack, directory)
        load = LoadGenerator(server.port)
        stack.callback(load.close)
        runner = Runner(options, server, load, url.rpartition("/")[2] or None)
        print(STEP_HEADER)
        runner.ramp(outcome)
        runner.latency(outcome)
        nats_note = ""
        if uses_nats(variant):
            wait_outbox_drained(url)
            counts = nats_streams(options.nats, delete=False)
            nats_note = f"; stream {STREAM}: {counts.get(STREAM, 0):,} messages"
        load.close()
        server.stop()
        if variant.database is None:
            return outcome
        if variant.database == "pg":
            rows, extra = stored_rows_postgres(url, variant)
        else:
            rows, extra = stored_rows_sqlite(directory / "bench.db")
        accepted = runner.accepted_all
        outcome.lost = rows < accepted
        verdict = "none lost" if rows >= accepted else f"{accepted - rows:,} LOST"
        outcome.stored = (
            f"{rows:,} webhook_events rows for {accepted:,} accepted answers "
            f"({verdict}){extra}{nats_note}"
        )
        print(f"  stored: {outcome.stored}")
    return outcome


# --- the report -----------------------------------------------------------------------------------


def ms(step: Step | None, pct: float) -> str:
    return f"{step.p(pct) * 1e3:.2f}" if step is not None else "-"


def print_table(outcomes: dict[str, Outcome]) -> None:
    bare = outcomes.get("bare")
    print(
        f"\n{'target':<44} {'max/s':>7} {'half/s':>7} {'p50':>7} {'p99':>7} "
        f"{'p50@1k':>7} {'p99@1k':>7} {'ratio':>6}  CPU ms/req at max: server client pg"
    )
    for outcome in outcomes.values():
        if outcome.error:
            print(f"{outcome.variant.label:<44} failed: {outcome.error}")
            continue
        ratio = (
            f"{outcome.max_rate / bare.max_rate:.2f}"
            if bare is not None and bare.max_rate and outcome is not bare
            else ("1.00" if outcome is bare else "-")
        )
        half = outcome.half
        best = outcome.best
        cpu = (
            f"{best.cpu_ms('server'):.3f} {best.cpu_ms('client'):.3f} {best.cpu_ms('postgres'):.3f}"
            if best
            else "-"
        )
        print(
            f"{outcome.variant.label:<44} {outcome.max_rate:>7,.0f} "
            f"{half.rate if half else 0:>7,.0f} {ms(half, 50):>7} {ms(half, 99):>7} "
            f"{ms(outcome.at_latency_rate, 50):>7} {ms(outcome.at_latency_rate, 99):>7} "
            f"{ratio:>6}  {cpu}"
        )
    print(
        "(ack latency in ms, request written -> answer read; half/s: half the highest sustained "
        "rate; 1k: 1,000/s; ratio = highest sustained rate / bare's)"
    )


def targets(outcomes: dict[str, Outcome]) -> list[tuple[str, bool | None]]:
    """The issue's targets, judged within this run (None: not measured in this run)."""
    checks: list[tuple[str, bool | None]] = []
    for key, floor in (
        ("pg", 1_500),
        ("pg_nats", 1_500),
        ("sqlite", 400),
        ("sqlite_embedded", 400),
    ):
        outcome = outcomes.get(key)
        label = VARIANTS[key].label
        if outcome is None or outcome.error:
            checks.append((f"{label}: >= {floor:,} stored webhooks/s", None))
            continue
        rate = outcome.max_rate
        checks.append(
            (f"{label}: {rate:,.0f} stored webhooks/s sustained (>= {floor:,})", rate >= floor)
        )
    for key in ("pg", "pg_nats"):
        outcome = outcomes.get(key)
        label = VARIANTS[key].label
        step = outcome.at_latency_rate if outcome else None
        if outcome is None or outcome.error:
            checks.append((f"{label}: p99 ack < 25 ms at {LATENCY_RATE:,}/s", None))
        elif step is None:
            checks.append(
                (
                    f"{label}: p99 ack < 25 ms at {LATENCY_RATE:,}/s: that rate is not sustained",
                    False,
                )
            )
        else:
            p99 = step.p(99) * 1e3
            checks.append(
                (
                    f"{label}: p99 ack {p99:.1f} ms at {LATENCY_RATE:,}/s (< 25)",
                    p99 < 25 and step.sustained,
                )
            )
    bare = outcomes.get("bare")
    for key in ("pg", "pg_nats"):
        outcome = outcomes.get(key)
        label = VARIANTS[key].label
        if bare is None or outcome is None or outcome.error or not bare.max_rate:
            checks.append((f"{label}: >= 40 % of the bare endpoint's maximum", None))
            continue
        share = outcome.max_rate / bare.max_rate
        checks.append(
            (
                f"{label}: {share:.0%} of the bare endpoint's {bare.max_rate:,.0f}/s (>= 40 %)",
                share >= 0.4,
            )
        )
    for key, outcome in outcomes.items():
        if VARIANTS[key].database is not None and outcome.stored:
            checks.append(
                (f"{VARIANTS[key].label}: every accepted delivery stored", not outcome.lost)
            )
    return checks


def describe(options: argparse.Namespace) -> None:
    (version,) = postgres(options.postgres, "SHOW server_version")
    fast = [name for name in ("uvloop", "httptools") if importlib.util.find_spec(name)]
    stack = " and ".join(fast) if fast else "asyncio and h11 (no uvloop, no httptools)"
    sample = signed_request("127.0.0.1:8000", 0)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs (server, load generator, "
        f"PostgreSQL and NATS share them), PostgreSQL {version[0]['server_version']}; "
        f"uvicorn with {stack}"
    )
    print(
        f"deliveries: GitHub push, {len(sample):,} bytes with headers "
        f"({len(push_payload(0)):,} body), each unique and signed before its step; "
        f"{options.connections} connections (up to {options.max_connections}), "
        f"timeout {options.timeout:g} s; steps of {options.warmup:g} s warm-up + "
        f"{options.seconds:g} s measured at {', '.join(f'{r:,}' for r in options.rates)}/s, "
        f"then {options.refine} bisection(s)"
    )
    print(
        "per step: p50/p99/max = ack latency; late99 = p99 of how late requests were written "
        "(the client's lag, or a wait for a connection); due99 = p99 of due time -> answer; "
        "cap = requests that waited for a connection, conns = most connections open; other = "
        f"cores used by the rest of the machine (a step with over {options.noise:g} is run "
        f"again, up to {options.noisy_retries} times)"
    )


def run_one(key: str, options: argparse.Namespace, outcomes: dict[str, Outcome]) -> None:
    """Run one target; a failure is recorded as its outcome, and the run goes on."""
    variant = VARIANTS[key]
    if uses_nats(variant):
        others = nats_streams(options.nats, delete=False).get("others", [])
        clash = [s for s in others if s.split(".")[0] in {"seawall", "seawall_dlq", ">"}]
        if clash:
            outcomes[key] = Outcome(variant, error=f"another NATS stream holds {clash}")
            print(f"\n{variant.label}: skipped, another NATS stream holds {clash}")
            return
    try:
        outcomes[key] = run_variant(variant, options)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        if isinstance(exc, subprocess.CalledProcessError) and exc.stderr:
            text += " " + exc.stderr.decode(errors="replace").strip().splitlines()[-1][:200]
        outcomes[key] = Outcome(variant, error=text)
        print(f"  failed: {text}")


def main(options: argparse.Namespace) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # progress in a pipe
    # Turn SIGTERM into KeyboardInterrupt, so that servers, databases and streams are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    describe(options)
    drop_leftovers(options.postgres)
    started = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    try:
        for key in options.variants:
            run_one(key, options, outcomes)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped, databases dropped, streams deleted")
        return 130
    print_table(outcomes)
    print(f"\ntargets (within this run, {time.monotonic() - started:,.0f} s):")
    for text, ok in targets(outcomes):
        verdict = "not run" if ok is None else ("met" if ok else "MISSED")
        print(f"  [{verdict:>7}] {text}")
    return 0


async def _receiver_run(url: str, sizes: list[int], deliveries: int) -> None:
    # Imported here: only this mode loads seawall into the bench process.
    from pydantic import SecretStr

    from seawall.db import Database, migrate
    from seawall.webhooks import WebhookProvider, WebhookReceiver

    github = WebhookProvider(name=PROVIDER, scheme="github", secrets=(SecretStr(HMAC_KEY),))

    def delivery(index: int) -> tuple[dict[str, str], bytes]:
        body = push_payload(index)
        signature = hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
        return {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={signature}",
        }, body

    database = Database(url)
    try:
        await migrate(database)
        receiver = WebhookReceiver(database, {PROVIDER: github})
        warm = [delivery(i) for i in range(200)]
        await asyncio.gather(*(receiver.receive(github, h, b) for h, b in warm))
        for size in sizes:
            batch = [delivery(i) for i in range(deliveries)]
            cpu, wall = time.process_time(), time.perf_counter()
            for start in range(0, deliveries, size):
                group = batch[start : start + size]
                await asyncio.gather(*(receiver.receive(github, h, b) for h, b in group))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(
                f"  {size:>4} at a time: {cpu / deliveries * 1000:.3f} ms CPU per delivery, "
                f"{deliveries / wall:,.0f} deliveries/s"
            )
    finally:
        await database.dispose()


def receiver_only(options: argparse.Namespace) -> int:
    """``--receiver``: `WebhookReceiver.receive` on PostgreSQL, no HTTP; CPU per delivery."""
    sizes = [int(size) for size in options.receiver.split(",")]
    print(
        f"WebhookReceiver.receive on PostgreSQL, no HTTP: {options.receiver_deliveries:,} "
        f"signed {len(push_payload(0)):,}-byte GitHub deliveries per group size"
    )
    drop_leftovers(options.postgres)
    with fresh_database(options.postgres, "receiver") as url:
        asyncio.run(_receiver_run(url, sizes, options.receiver_deliveries))
    return 0


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load not measured")
    parser.add_argument(
        "--rates", default=",".join(map(str, RAMP)), help="offered rates of the ramp (per second)"
    )
    parser.add_argument("--refine", type=int, default=2, help="bisections after the ramp")
    parser.add_argument(
        "--variants",
        help=f"targets to run, in order, from {', '.join(VARIANTS)} (default: all; "
        "--quick: bare,pg)",
    )
    parser.add_argument("--connections", type=int, default=64, help="connections open at start")
    parser.add_argument("--max-connections", type=int, default=512, help="connection cap")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds before a request fails"
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.25,
        help="cores other processes may use during a step before it is run again",
    )
    parser.add_argument("--noisy-retries", type=int, default=2, help="re-runs of a noisy step")
    parser.add_argument("--postgres", default="postgresql://127.0.0.1:5432/postgres")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--quick", action="store_true", help="bare and pg, three 1 s steps")
    parser.add_argument(
        "--receiver",
        metavar="SIZES",
        help="measure WebhookReceiver.receive without HTTP, SIZES deliveries at a time (1,5,50)",
    )
    parser.add_argument("--receiver-deliveries", type=int, default=2000, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.quick:
        options.seconds, options.warmup = min(options.seconds, 1.0), min(options.warmup, 0.3)
        options.rates, options.refine = ",".join(map(str, QUICK_RAMP)), 0
        options.variants = options.variants or "bare,pg"
    options.variants = options.variants or ",".join(VARIANTS)
    options.rates = [int(rate) for rate in options.rates.split(",")]
    options.variants = [key.strip() for key in options.variants.split(",") if key.strip()]
    unknown = [key for key in options.variants if key not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return options


if __name__ == "__main__":
    arguments = parse_options()
    if arguments.serve_bare:
        serve_bare(arguments.serve_bare)
        sys.exit(0)
    if arguments.receiver:
        sys.exit(receiver_only(arguments))
    sys.exit(main(arguments))
