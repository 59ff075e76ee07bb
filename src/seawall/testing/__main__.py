"""Run one fake provider in the foreground: ``python -m seawall.testing <provider>``.

Prints ``listening on <url>`` (one line, flushed) once the port is bound, then
serves until SIGTERM or SIGINT, closing every connection on the way out.
`seawall.testing.spawn_fake` runs this and reads that line.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import seawall.testing  # noqa: F401 - importing the package registers every provider
from seawall.testing._runner import PROVIDERS, ThreadedServer
from seawall.testing._server import FakeServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m seawall.testing",
        description="Run a fake third-party provider on loopback until SIGTERM or SIGINT.",
    )
    parser.add_argument("provider", choices=sorted(PROVIDERS), help="which fake to run")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: a free one)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the chaos random source")
    parser.add_argument(
        "--no-record", action="store_true", help="do not keep a log of requests (benchmarks)"
    )
    return parser


def _build(arguments: argparse.Namespace) -> ThreadedServer:
    kind = PROVIDERS[arguments.provider]
    if issubclass(kind, FakeServer):
        return kind(
            host=arguments.host,
            port=arguments.port,
            record=not arguments.no_record,
            seed=arguments.seed,
        )
    return kind(host=arguments.host, port=arguments.port)


async def _serve(server: ThreadedServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def announce() -> None:
        print(f"listening on {server.url}", flush=True)

    await server.serve(stop=stop, ready=announce)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse *argv*, run the provider until a signal, and return the exit code."""
    arguments = _parser().parse_args(argv)
    try:
        server = _build(arguments)
        asyncio.run(_serve(server))
    except (OSError, ValueError) as exc:
        print(f"cannot run the {arguments.provider} fake: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
