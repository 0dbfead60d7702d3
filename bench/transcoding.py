"""Section 4: decode + resample speed per codec, the worker's decoder beside plain PyAV.

The audio is the benchmark's tone program (``bench.audio``), encoded with
``emulator.samples.encode``. Both sides produce 16 kHz mono s16; speed is
audio seconds per wall second on one thread.
"""

from __future__ import annotations

import io
import time

import av

from bench.audio import CHUNK_MS, tone_program
from bench.results import Transcode
from emulator.samples import encode
from workers.tools.plan import chunk_plan
from workers.transcode import ContainerDecoder

CODECS = {"Opus": "ogg-opus", "MP3": "mp3", "AAC": "m4a-aac", "FLAC": "flac"}


def worker_decode(data: bytes, duration_s: float) -> float:
    """Seconds to decode ``data`` through ContainerDecoder fed ~100 ms pieces."""
    chunks = chunk_plan(len(data), duration_s, CHUNK_MS)
    start = time.perf_counter()
    with ContainerDecoder(target_rate=16000, target_channels=1) as decoder:
        for chunk in chunks:
            decoder.feed(data[chunk.start : chunk.end])
        decoder.flush()
    return time.perf_counter() - start


def plain_decode(data: bytes) -> float:
    """Seconds for a plain PyAV decode + resample loop over the whole file."""
    start = time.perf_counter()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    with av.open(io.BytesIO(data), mode="r") as box:
        for frame in box.decode(audio=0):
            for out in resampler.resample(frame):
                bytes(out.planes[0])
    resampler.resample(None)
    return time.perf_counter() - start


def run(seconds: float = 60.0, repeats: int = 3) -> list[Transcode]:
    """Best of ``repeats`` for each codec (the machine is shared: the best run is
    the one least disturbed)."""
    pcm = tone_program(seconds)
    duration = len(pcm) / 32000
    results = []
    for name, fmt in CODECS.items():
        data = encode(pcm, 16000, 1, fmt)
        worker = min(worker_decode(data, duration) for _ in range(repeats))
        plain = min(plain_decode(data) for _ in range(repeats))
        results.append(Transcode(name, duration, duration / worker, duration / plain))
    return results
