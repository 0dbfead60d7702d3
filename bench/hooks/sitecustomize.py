"""Counts the Kafka requests of a benchmarked process (worker or bridge).

Loaded by Python at start-up when the bench puts this folder on the child's
``PYTHONPATH`` and names a file in ``RESON8_BENCH_KAFKA_REQUESTS``: every
request an aiokafka connection sends is counted by type, from every thread,
and the counts are written to that file (JSON) twice a second. The bench
reads the file at the edges of a step's window. Never loaded by the product.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from typing import Any

_PATH = os.environ.get("RESON8_BENCH_KAFKA_REQUESTS")
_counts: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()


def _install() -> None:
    from aiokafka import conn

    send = conn.AIOKafkaConnection.send

    def counting_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        name = type(request).__name__.split("_v")[0].removesuffix("Request")
        with _lock:
            _counts[name] += 1
        return send(self, request, *args, **kwargs)

    conn.AIOKafkaConnection.send = counting_send


def _write_forever(path: str) -> None:
    while True:
        with _lock:
            snapshot = dict(_counts)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(snapshot, f)
        os.replace(tmp, path)
        time.sleep(0.5)  # the file's refresh period


if _PATH:
    _install()
    threading.Thread(target=_write_forever, args=(_PATH,), daemon=True).start()
