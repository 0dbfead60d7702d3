"""The baseline: the smallest bridge one would write by hand instead of the worker.

Run as ``python -m bench.bridge ...``. A plain aiokafka consumer (a group, auto
commit) reads ``stt.audio``; each session key gets one WebSocket to the
upstream (``websockets``), opened on its first record with that record's
configuration headers; record values are forwarded as binary frames; every
transcript the upstream sends is produced as is to the output topic, keyed
by session. An ``end`` record sends a flush and closes after its
confirmation. No Faust, no transcoding, no coverage, no replay: nothing a
dropped connection or a crash would not lose. It is here to measure what the
worker's guarantees cost, so it runs with the worker's defaults wherever a
hand-written bridge has the same choice: fetch wait and minimum bytes,
producer linger, WebSocket options, the uvloop event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from urllib.parse import urlencode

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from websockets.asyncio.client import ClientConnection, connect

from workers.commands import install_event_loop
from workers.settings import Settings

DEFAULTS = Settings()  # the worker's defaults
_QUERY_HEADERS = {
    "stt-encoding": "encoding",
    "stt-sample-rate": "sample_rate",
    "stt-channels": "channels",
    "stt-custom-model-id": "custom_model_id",
}


class Call:
    """One session: a queue of frames to send, a sender and a reader task."""

    def __init__(self, bridge: Bridge, sid: str, headers: dict[str, str]) -> None:
        self.bridge = bridge
        self.sid = sid
        self.queue: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        query = {q: headers[h] for h, q in _QUERY_HEADERS.items() if h in headers}
        query["include_timestamps"] = "true"
        self.url = f"{bridge.url}/v1/speech-to-text/realtime?{urlencode(query)}"
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        headers = {"Authorization": f"ApiKey {self.bridge.api_key}"}
        async with connect(self.url, additional_headers=headers, compression=None) as ws:
            reader = asyncio.create_task(self.read(ws))
            while (item := await self.queue.get()) is not None:
                await ws.send(item)
            await reader
        self.bridge.calls.pop(self.sid, None)

    async def read(self, ws: ClientConnection) -> None:
        async for frame in ws:
            message = json.loads(frame)
            if message.get("type") == "transcript":
                await self.bridge.producer.send(
                    self.bridge.sink, str(frame).encode(), key=self.sid.encode()
                )
            elif message.get("type") == "flush_confirmation":
                await ws.close()
                return


class Bridge:
    """Consumer loop: route each record to its call."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.url = args.url
        self.api_key = args.api_key
        self.sink = args.sink
        self.calls: dict[str, Call] = {}
        self.consumer = AIOKafkaConsumer(
            args.source,
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            max_partition_fetch_bytes=8 << 20,
            fetch_max_wait_ms=DEFAULTS.fetch_max_wait_ms,
            fetch_min_bytes=DEFAULTS.fetch_min_bytes,
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=args.bootstrap, linger_ms=DEFAULTS.producer_linger_ms
        )

    async def run(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        try:
            while not self.consumer.assignment():
                await self.consumer.getmany(timeout_ms=100)  # joins the group
            print("ready", flush=True)
            while True:
                batches = await self.consumer.getmany(timeout_ms=100)
                for records in batches.values():
                    for record in records:
                        self.route(record)
        finally:
            await self.consumer.stop()
            await self.producer.stop()

    def route(self, record: object) -> None:
        key: bytes = record.key  # type: ignore[attr-defined]
        headers = {k: v.decode() for k, v in record.headers}  # type: ignore[attr-defined]
        sid = key.decode()
        call = self.calls.get(sid)
        if call is None:
            call = self.calls[sid] = Call(self, sid, headers)
        value: bytes = record.value  # type: ignore[attr-defined]
        if value:
            call.queue.put_nowait(value)
        if headers.get("stt-kind") == "end":
            call.queue.put_nowait(json.dumps({"type": "flush_request", "id": "end"}))
            call.queue.put_nowait(None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key", default="bench")
    args = parser.parse_args(argv)
    install_event_loop(DEFAULTS.event_loop)
    asyncio.run(_serve(args))
    return 0


async def _serve(args: argparse.Namespace) -> None:
    await Bridge(args).run()  # aiokafka clients must be made inside the running loop


if __name__ == "__main__":
    raise SystemExit(main())
