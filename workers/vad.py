"""A cheap energy voice-activity detector: how much silence ends the audio so far.

The worker flushes the upstream only where the audio is silent, so a flush
never cuts a word in two (a flush finalizes whatever the recognizer holds).
Energy in 10 ms frames against a fixed threshold is enough for that: the
question is "is the tail quiet", not "is this speech". No I/O.
"""

from __future__ import annotations

import numpy as np

from workers.frames import FrameAligner
from workers.transcode import alaw_to_s16, mulaw_to_s16

FRAME_MS = 10
# -50 dBFS: below any speech, above the noise floor of telephone audio and
# of the lossy codecs' artefacts in silence.
SILENCE_DBFS = -50.0
_THRESHOLD = (32768.0 * 10 ** (SILENCE_DBFS / 20)) ** 2  # mean square of int16 samples


class SilenceTracker:
    """Feed it the stream's audio; :attr:`trailing_ms` is the silence at its end."""

    def __init__(self, sample_rate: int, encoding: str = "pcm_s16le", channels: int = 1) -> None:
        width = 2 if encoding == "pcm_s16le" else 1
        self._encoding = encoding
        self._channels = channels
        self._samples = sample_rate * FRAME_MS // 1000 * channels
        self._aligner = FrameAligner(self._samples * width)
        self.trailing_ms = 0

    def feed(self, audio: bytes) -> int:
        """Account for ``audio`` (any split); returns :attr:`trailing_ms`."""
        whole = self._aligner.take(audio)
        if not whole:
            return self.trailing_ms
        samples = self._decode(whole).astype(np.float64).reshape(-1, self._samples)
        loud = np.flatnonzero((samples * samples).mean(axis=1) > _THRESHOLD)
        frames = samples.shape[0]
        if loud.size == 0:
            self.trailing_ms += frames * FRAME_MS
        else:
            self.trailing_ms = (frames - 1 - int(loud[-1])) * FRAME_MS
        return self.trailing_ms

    def _decode(self, data: bytes) -> np.ndarray:
        if self._encoding == "mulaw":
            data = mulaw_to_s16(data)
        elif self._encoding == "alaw":
            data = alaw_to_s16(data)
        return np.frombuffer(data, dtype="<i2")
