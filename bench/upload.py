"""Document upload: ``POST /cases/{id}/documents`` vs writing the same bytes straight to the store.

Usage: .venv/bin/python bench/upload.py [--sizes 20,100] [--repeat 3]
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
- the best of ``--repeat`` runs of each; ``throughput ratio = baseline time / API
  time`` (1.0: the API adds nothing to the store's own cost).

Peak RSS that stays flat from the smallest size to the largest is the proof that
memory does not grow with the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
        started = time.perf_counter()
        await store.put(f"bench/{uuid.uuid4()}", chunks(size, block), content_type="text/plain")
        elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "peak_rss_mb": peak_rss_mb(os.getpid())}))


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


async def api(size: int, repeat: int, folder: Path) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAWALL_")}
    env.update(
        SEAWALL_DATABASE_URL=f"sqlite:///{folder / 'bench.db'}",
        SEAWALL_PORT=str(port),
        SEAWALL_LOG_LEVEL="warning",
        SEAWALL_RELAY="false",
        SEAWALL_WORKER="false",
        SEAWALL_STORAGE__PATH=str(folder / "blobs"),
        SEAWALL_STORAGE__SIGNING_SECRET=SECRET,
        SEAWALL_STORAGE__MAX_UPLOAD_BYTES=str(size + CHUNK),
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
        [sys.executable, "-m", "seawall", "serve"],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    block = os.urandom(CHUNK)
    best = float("inf")
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(300.0)
        ) as client:
            await _wait_ready(client, proc)
            case = await client.post(
                "/cases",
                json={"title": "bench", "priority": "low"},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            case_id = case.json()["id"]
            for _ in range(repeat):
                boundary = uuid.uuid4().hex
                head = (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                    f'filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n'
                ).encode()
                tail = f"\r\n--{boundary}--\r\n".encode()

                async def body(
                    head: bytes = head, tail: bytes = tail, block: bytes = os.urandom(CHUNK)
                ) -> AsyncIterator[bytes]:
                    yield head
                    async for piece in chunks(size, block):
                        yield piece
                    yield tail

                started = time.perf_counter()
                status, answer = await raw_post(
                    port,
                    f"/cases/{case_id}/documents",
                    {
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                        "Content-Length": str(len(head) + size + len(tail)),
                        "Idempotency-Key": str(uuid.uuid4()),
                    },
                    body(),
                )
                elapsed = time.perf_counter() - started
                assert status == 201, answer
                best = min(best, elapsed)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    del block
    return {"seconds": best, "peak_rss_mb": rss}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="20,100", help="sizes in MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [5, 20] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 1 if args.quick else args.repeat
    print(
        f"{'size':>6} {'store MB/s':>11} {'API MB/s':>9} {'ratio':>6} "
        f"{'store RSS':>10} {'API RSS':>8}"
    )
    for megabytes in sizes:
        size = megabytes * 1_000_000
        with tempfile.TemporaryDirectory(prefix="seawall-bench-upload-") as tmp:
            folder = Path(tmp)
            base = min(
                (baseline(size, folder / "direct") for _ in range(repeat)),
                key=lambda r: r["seconds"],
            )
            served = await api(size, repeat, folder)
        ratio = base["seconds"] / served["seconds"]
        print(
            f"{megabytes:>4}MB {megabytes / base['seconds']:>11.1f} "
            f"{megabytes / served['seconds']:>9.1f} {ratio:>6.2f} "
            f"{base['peak_rss_mb']:>8.1f}MB {served['peak_rss_mb']:>6.1f}MB"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--baseline-child":
        asyncio.run(_baseline(int(sys.argv[2]), sys.argv[3]))
    else:
        asyncio.run(main())
