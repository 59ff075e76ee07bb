"""Document upload: ``POST /cases/{id}/documents`` vs writing the same bytes straight to the store.

Usage: .venv/bin/python bench/upload.py [--sizes 20,100] [--repeat 5]
       .venv/bin/python bench/upload.py --quick      # 5 and 20 MB, once: checks it all works

What runs, for each size (MB, 10^6 bytes), in one run:

- the API: a real ``python -m seawall serve`` subprocess (embedded SQLite, local
  blob store in a temporary folder, relay and worker off so that only the upload
  is measured), fresh for each size. The client streams a multipart body with a
  ``Content-Length`` (1 MiB chunks of random bytes, generated as sent, never held
  whole) with httpx; the time is from the first byte sent to the 201 answer. The
  server's peak RSS is its ``VmHWM`` from /proc after the uploads of that size;
- the baseline: `LocalBlobStore.put` of the same chunks into a store on the same
  disk, in a subprocess of its own (so its peak RSS is its own): atomic write,
  SHA-256, fsync, rename, exactly what the API's store does under the upload;
- ``--repeat`` rounds, each a baseline write then an API upload, one right after
  the other: a slow spell of this shared machine's disk or CPU then hits both
  sides of a round alike, instead of all the runs of one side;
- ``throughput ratio = baseline time / API time`` (1.0: the API adds nothing to the
  store's own cost), of the best run of each side, and the median of the rounds'
  own ratios;
- the CPU time of each side, median of the rounds: the baseline process's (all
  its threads) around its ``put``, and the server's around an upload (from
  /proc, all threads: receiving, parsing, hashing, writing, recording). On a
  2-core machine the client, the server's event loop and its writing thread
  share two cores, so the CPU figures say what the API costs where it has the
  cores a server would have.

Peak RSS that stays flat from the smallest size to the largest is the proof that
memory does not grow with the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHUNK = 1 << 20
SECRET = "bench-signing-secret"  # noqa: S105 - a throwaway key for a temporary store


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def chunks(size: int, block: bytes) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        sent += len(piece)
        yield piece


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the baseline child -------------------------------------------------------------------------


async def _baseline(size: int, folder: str) -> None:
    from pydantic import SecretStr

    from seawall.storage import LocalBlobStore

    block = os.urandom(CHUNK)
    store = LocalBlobStore(folder, signing_secret=SecretStr(SECRET))
    async with store:
        started, cpu = time.perf_counter(), time.process_time()
        await store.put(f"bench/{uuid.uuid4()}", chunks(size, block), content_type="text/plain")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"seconds": elapsed, "cpu": cpu, "peak_rss_mb": peak_rss_mb(os.getpid())}))


def baseline(size: int, folder: Path) -> dict[str, float]:
    out = subprocess.run(  # noqa: S603 - this script, fixed arguments
        [sys.executable, __file__, "--baseline-child", str(size), str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


# --- the API ------------------------------------------------------------------------------------


async def raw_post(
    port: int, path: str, headers: dict[str, str], body: AsyncIterator[bytes]
) -> tuple[int, bytes]:
    """POST over a plain socket: the client's own CPU cost stays out of the figure.

    httpx would spend a core of this 2-core machine framing the body that the
    server is being measured on.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    async for piece in body:
        writer.write(piece)
        await writer.drain()
    answer = await reader.read()
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer[-300:]


async def _wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError("seawall serve exited early")
        try:
            if (await client.get("/health/live")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("seawall serve did not start")


class Service:
    """A ``seawall serve`` subprocess with one case to upload to."""

    def __init__(self, size: int, folder: Path) -> None:
        self.size = size
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.case_id = ""

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEAWALL_")}
        env.update(
            SEAWALL_DATABASE_URL=f"sqlite:///{self.folder / 'bench.db'}",
            SEAWALL_PORT=str(self.port),
            SEAWALL_LOG_LEVEL="warning",
            SEAWALL_RELAY="false",
            SEAWALL_WORKER="false",
            SEAWALL_STORAGE__PATH=str(self.folder / "blobs"),
            SEAWALL_STORAGE__SIGNING_SECRET=SECRET,
            SEAWALL_STORAGE__MAX_UPLOAD_BYTES=str(self.size + CHUNK),
        )
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
            [sys.executable, "-m", "seawall", "serve"],
            env=env,
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as client:
            await _wait_ready(client, self.proc)
            case = await client.post(
                "/cases",
                json={"title": "bench", "priority": "low"},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            self.case_id = case.json()["id"]

    async def upload(self) -> tuple[float, float]:
        """Upload one document of ``size`` bytes; return its seconds and the server's CPU."""
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        async def body(block: bytes = os.urandom(CHUNK)) -> AsyncIterator[bytes]:
            yield head
            async for piece in chunks(self.size, block):
                yield piece
            yield tail

        assert self.proc is not None
        started, cpu = time.perf_counter(), cpu_seconds(self.proc.pid)
        status, answer = await raw_post(
            self.port,
            f"/cases/{self.case_id}/documents",
            {
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + self.size + len(tail)),
                "Idempotency-Key": str(uuid.uuid4()),
            },
            body(),
        )
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(self.proc.pid) - cpu
        assert status == 201, answer
        return elapsed, cpu

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        return peak_rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


async def measure(size: int, repeat: int, folder: Path) -> dict[str, float]:
    """Rounds of one baseline write and one API upload; the best of each and the rounds' median."""
    service = Service(size, folder)
    stores: list[dict[str, float]] = []
    uploads: list[tuple[float, float]] = []
    try:
        await service.start()
        for _ in range(repeat):
            stores.append(baseline(size, folder / "direct"))
            uploads.append(await service.upload())
        rss = service.peak_rss_mb()
    finally:
        service.stop()
    return {
        "store_seconds": min(run["seconds"] for run in stores),
        "store_cpu": statistics.median(run["cpu"] for run in stores),
        "store_rss_mb": max(run["peak_rss_mb"] for run in stores),
        "api_seconds": min(seconds for seconds, _ in uploads),
        "api_cpu": statistics.median(cpu for _, cpu in uploads),
        "api_rss_mb": rss,
        "median_ratio": statistics.median(
            store["seconds"] / seconds for store, (seconds, _) in zip(stores, uploads, strict=True)
        ),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="20,100", help="sizes in MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [5, 20] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 1 if args.quick else args.repeat
    print(
        f"{'size':>6} {'store MB/s':>11} {'API MB/s':>9} {'ratio':>6} {'median':>7} "
        f"{'store CPU':>10} {'API CPU':>8} {'store RSS':>10} {'API RSS':>8}"
    )
    for megabytes in sizes:
        size = megabytes * 1_000_000
        with tempfile.TemporaryDirectory(prefix="seawall-bench-upload-") as tmp:
            result = await measure(size, repeat, Path(tmp))
        print(
            f"{megabytes:>4}MB {megabytes / result['store_seconds']:>11.1f} "
            f"{megabytes / result['api_seconds']:>9.1f} "
            f"{result['store_seconds'] / result['api_seconds']:>6.2f} "
            f"{result['median_ratio']:>7.2f} "
            f"{result['store_cpu'] * 1000:>8.0f}ms {result['api_cpu'] * 1000:>6.0f}ms "
            f"{result['store_rss_mb']:>8.1f}MB {result['api_rss_mb']:>6.1f}MB"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--baseline-child":
        asyncio.run(_baseline(int(sys.argv[2]), sys.argv[3]))
    else:
        asyncio.run(main())
