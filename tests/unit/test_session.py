"""Session: raw passthrough, split channels, offset coverage (no I/O)."""

from __future__ import annotations

import struct

from schemas.envelope import SessionConfig
from schemas.wire import FlushConfirmation, FlushRequest, Transcript
from workers.session import Session


def raw(**kw: object) -> SessionConfig:
    return SessionConfig.model_validate({"encoding": "pcm_s16le", "sample_rate": 8000, **kw})


def stereo(frames: list[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack("<hh", left, right) for left, right in frames)


def test_raw_mixed_audio_passes_through_untouched() -> None:
    session = Session("s", raw(channels=2), upstream_rate=16000)
    [stream] = session.streams
    assert stream.params.encoding == "pcm_s16le"
    assert stream.params.sample_rate == 8000
    assert stream.params.channels == 2
    stream.connected(None)
    data = stereo([(1, 2), (3, 4)])
    session.feed(data[:3])
    session.feed(data[3:])
    assert b"".join(x for x in stream.outgoing() if isinstance(x, bytes)) == data


def test_split_pcm_gives_one_mono_stream_per_channel_with_labels() -> None:
    config = raw(channels=2, channel_mode="split", channel_labels=("agent", "caller"))
    session = Session("s", config, upstream_rate=16000)
    left, right = session.streams
    assert (left.label, right.label) == ("agent", "caller")
    assert left.params.channels == right.params.channels == 1
    data = stereo([(1, -1), (2, -2), (3, -3)])
    session.feed(data[:5])  # splits inside a frame
    session.feed(data[5:])
    for s in (left, right):
        s.connected(None)
    assert list(left.outgoing()) == [struct.pack("<hhh", 1, 2, 3)]
    assert list(right.outgoing()) == [struct.pack("<hhh", -1, -2, -3)]


def test_split_mulaw_deinterleaves_bytes_without_decoding() -> None:
    config = SessionConfig(encoding="mulaw", sample_rate=8000, channels=2, channel_mode="split")
    session = Session("s", config, upstream_rate=16000)
    session.feed(bytes([10, 20, 11, 21, 12]))
    left, right = session.streams
    for s in (left, right):
        s.connected(None)
    assert list(left.outgoing()) == [bytes([10, 11])]
    assert list(right.outgoing()) == [bytes([20, 21])]
    assert left.params.encoding == "mulaw"


def test_offsets_become_covered_only_when_every_stream_is_covered() -> None:
    config = raw(channels=2, channel_mode="split")
    session = Session("s", config, upstream_rate=16000)
    left, right = session.streams
    for s in (left, right):
        s.connected(None)
    session.feed(b"\x00" * 4 * 800)  # 100 ms
    session.mark(10)
    session.feed(b"\x00" * 4 * 800)
    session.mark(11)
    for s in (left, right):
        list(s.outgoing())
    assert session.covered_offset() is None
    left.on_message(Transcript(text="a", start_ms=0, duration_ms=200))
    assert session.covered_offset() is None
    right.on_message(Transcript(text="b", start_ms=0, duration_ms=100))
    assert session.covered_offset() == 10
    right.on_message(Transcript(text="c", start_ms=100, duration_ms=100))
    assert session.covered_offset() == 11
    assert session.covered_offset() is None  # each offset is reported once


def test_flush_record_is_covered_by_its_confirmation() -> None:
    session = Session("s", raw(), upstream_rate=16000)
    [stream] = session.streams
    stream.connected(None)
    session.feed(b"\x00" * 1600)
    [flush_id] = session.flush(user=True)
    session.mark(5)
    out = list(stream.outgoing())
    assert out[-1] == FlushRequest(id=flush_id)
    assert session.covered_offset() is None
    stream.on_message(FlushConfirmation(id=flush_id))
    assert session.covered_offset() == 5
    assert session.uncovered_seconds == 0
