"""Raw floors: what Kafka and a WebSocket cost on this machine with nothing else.

- Kafka: one aiokafka producer (acks=all) and one consumer (assigned, no
  group) in this process; each record carries its send time, the consumer
  notes when it got it.
- WebSocket: a ``websockets`` echo server on loopback; a client sends a
  3.2 kB binary message (one 100 ms chunk of 16 kHz PCM) and waits for it back.
"""

from __future__ import annotations

import asyncio
import struct
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from bench.stats import Percentiles, percentiles

CHUNK = bytes(3200)


async def kafka_round_trip(bootstrap: str, topic: str, count: int = 400) -> Percentiles:
    """Produce -> consume latency of ``count`` records sent 5 ms apart."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=5
    )
    await producer.start()
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        reader = asyncio.create_task(_receive(consumer, count))
        for _ in range(count):
            await producer.send(topic, struct.pack("<d", time.time()) + CHUNK, partition=0)
            await asyncio.sleep(0.005)  # a steady trickle, like one live call's records
        return percentiles(await asyncio.wait_for(reader, 30.0))
    finally:
        await producer.stop()
        await consumer.stop()


async def _receive(consumer: AIOKafkaConsumer, count: int) -> list[float]:
    latencies: list[float] = []
    while len(latencies) < count:
        batches = await consumer.getmany(timeout_ms=100)
        now = time.time()
        for records in batches.values():
            latencies += [(now - struct.unpack_from("<d", r.value)[0]) * 1000 for r in records]
    return latencies


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def websocket_round_trip(count: int = 2000) -> Percentiles:
    """Round trip of a 3.2 kB binary message through a loopback echo server."""
    async with serve(_echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            latencies = []
            for _ in range(count):
                start = time.perf_counter()
                await ws.send(CHUNK)
                await ws.recv()
                latencies.append((time.perf_counter() - start) * 1000)
    return percentiles(latencies)
