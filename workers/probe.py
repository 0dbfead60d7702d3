"""Client side of the worker's HTTP endpoints (``/healthz``, ``/ready``), for
whatever starts a worker and waits for it (test harness, benchmarks).

A bare HTTP/1.0 request on a socket: no client library, and a worker that is
not listening yet is an answer (None), not an error.
"""

from __future__ import annotations

import asyncio
import contextlib


async def http_status(
    port: int, path: str, host: str = "127.0.0.1", timeout_s: float = 5.0
) -> int | None:
    """Status code of ``GET path`` on ``host:port``; None if nothing answers
    within ``timeout_s`` (a worker that is not listening, is going away or
    whose loop is blocked)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _get(host, port, path)
    except (OSError, TimeoutError, ValueError):
        return None


async def _get(host: str, port: int, path: str) -> int | None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 else None
