"""The tones recognizer survives lossy codecs: synthesize, encode, decode, recognize."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from emulator.recognizers import Final, create_recognizer
from emulator.tones import expected_finals, synthesize

UTTERANCES = [
    ["alpha", "bravo", "charlie"],
    ["delta", "echo", "foxtrot", "golf"],
    ["hotel", "india", "juliet", "juliet"],
]
TOLERANCE_MS = 20


def encode(pcm: bytes, container: str, codec: str, bit_rate: int) -> bytes:
    """Encode 16 kHz mono s16 ``pcm`` with PyAV into an in-memory file."""
    samples = np.frombuffer(pcm, "<i2")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = output.add_stream(codec, rate=16000, layout="mono")
        stream.bit_rate = bit_rate
        sample_format = "s16p" if codec == "libmp3lame" else "s16"  # what each encoder takes
        for pts in range(0, samples.size, 960):
            chunk = samples[pts : pts + 960].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format=sample_format, layout="mono")
            frame.sample_rate, frame.pts = 16000, pts
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def decode(data: bytes) -> bytes:
    """Decode any PyAV-readable file to 16 kHz mono s16."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    chunks: list[bytes] = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().tobytes() for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().tobytes() for f in resampler.resample(None)]
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("container", "codec", "bit_rate"),
    [("ogg", "libopus", 24000), ("ogg", "libopus", 12000), ("mp3", "libmp3lame", 32000)],
)
def test_lossy_round_trip_keeps_the_words(container: str, codec: str, bit_rate: int) -> None:
    audio = decode(encode(synthesize(UTTERANCES), container, codec, bit_rate))
    recognizer = create_recognizer("tones")
    events = recognizer.feed(audio) + recognizer.flush()
    got = [e.hypothesis for e in events if isinstance(e, Final)]
    want = expected_finals(UTTERANCES)
    assert [h.text for h in got] == [text for text, _, _ in want]
    for hypothesis, (_, start_ms, duration_ms) in zip(got, want, strict=True):
        assert abs(hypothesis.start_ms - start_ms) <= TOLERANCE_MS
        assert abs(hypothesis.duration_ms - duration_ms) <= 2 * TOLERANCE_MS
