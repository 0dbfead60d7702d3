"""Source with a container input: decoded to PCM at the upstream rate (real PyAV)."""

from __future__ import annotations

import struct

from emulator import samples
from schemas.envelope import SessionConfig
from workers.source import Source


def test_container_session_decodes_to_pcm_at_the_upstream_rate() -> None:
    pcm = struct.pack("<800h", *([1000, -1000] * 400))  # 100 ms at 8 kHz
    wav = samples.encode(pcm, 8000, 1, "wav")
    session = Source("s", SessionConfig(), upstream_rate=16000)
    for i in range(0, len(wav), 7):
        session.add(i, wav[i : i + 7], "audio")
    session.add(len(wav), b"", "end")
    while session.busy:
        session.process()
    [stream] = session.streams
    assert stream.params.encoding == "pcm_s16le"
    assert stream.params.sample_rate == 16000
    assert abs(stream.frames_in - 1600) <= 32
    session.close()
