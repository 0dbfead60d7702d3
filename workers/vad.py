"""A cheap energy voice-activity detector: how much silence ends some audio.

The worker flushes the upstream only where the audio is silent, so a flush
never cuts a word in two (a flush finalizes whatever the recognizer holds).
Energy in 10 ms frames against a fixed threshold is enough for that: the
question is "is the tail quiet", not "is this speech". No I/O.

It is asked on demand, of the audio a stream still holds (its replay
buffer), scanning back from the end until the first loud frame: nothing is
computed per record (it used to cost a tenth of the worker's CPU).
"""

from __future__ import annotations

import numpy as np

from workers.transcode import alaw_to_s16, mulaw_to_s16

FRAME_MS = 10
# -50 dBFS: below any speech, above the noise floor of telephone audio and
# of the lossy codecs' artefacts in silence.
SILENCE_DBFS = -50.0
_THRESHOLD = (32768.0 * 10 ** (SILENCE_DBFS / 20)) ** 2  # mean square of int16 samples
_CHUNK_FRAMES = 32  # 320 ms scanned at a time, newest first


def trailing_silence_ms(
    audio: bytes | bytearray | memoryview,
    sample_rate: int,
    encoding: str = "pcm_s16le",
    channels: int = 1,
) -> int:
    """Milliseconds of silence at the end of ``audio`` (whole 10 ms frames,
    counted back from its end; all of it when it is all silent)."""
    width = 2 if encoding == "pcm_s16le" else 1
    frame = sample_rate * FRAME_MS // 1000 * channels * width  # bytes per 10 ms
    if frame <= 0:
        return 0
    view = memoryview(audio)
    end = len(view) - len(view) % frame
    silent = 0
    while end > 0:
        start = max(0, end - _CHUNK_FRAMES * frame)
        loud = _loud_frames(view[start:end], frame, encoding)
        frames = (end - start) // frame
        if loud.size:
            return (silent + frames - 1 - int(loud[-1])) * FRAME_MS
        silent += frames
        end = start
    return silent * FRAME_MS


def _loud_frames(chunk: memoryview, frame: int, encoding: str) -> np.ndarray:
    data = bytes(chunk)
    if encoding == "mulaw":
        data = mulaw_to_s16(data)
    elif encoding == "alaw":
        data = alaw_to_s16(data)
    samples = np.frombuffer(data, dtype="<i2").astype(np.int64)
    per_frame = len(samples) // (len(chunk) // frame)
    energy = np.einsum("ij,ij->i", *(samples.reshape(-1, per_frame),) * 2)
    return np.flatnonzero(energy > _THRESHOLD * per_frame)
