"""Source: raw passthrough, split channels, record coverage, restart positions (no I/O)."""

from __future__ import annotations

import random
import struct

from emulator.samples import encode
from schemas.envelope import SessionConfig
from schemas.wire import FlushConfirmation, FlushRequest, Transcript
from tests.fuzz.hostile import wav
from workers.checkpoint import Checkpoint
from workers.source import Source
from workers.stream import ChannelStream
from workers.transcode import alaw_to_s16, mulaw_to_s16


def raw(**kw: object) -> SessionConfig:
    return SessionConfig.model_validate({"encoding": "pcm_s16le", "sample_rate": 8000, **kw})


def feed(source: Source, offset: int, audio: bytes, kind: str = "audio") -> None:
    source.add(offset, audio, kind)
    source.process()
    assert not source.busy


def stereo(frames: list[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack("<hh", left, right) for left, right in frames)


def test_raw_mixed_audio_passes_through_untouched() -> None:
    session = Source("s", raw(channels=2), upstream_rate=16000)
    [stream] = session.streams
    assert stream.params.encoding == "pcm_s16le"
    assert stream.params.sample_rate == 8000
    assert stream.params.channels == 2
    stream.connected(None)
    data = stereo([(1, 2), (3, 4)])
    feed(session, 0, data[:3])
    feed(session, 1, data[3:])
    assert b"".join(x for x in stream.outgoing() if isinstance(x, bytes)) == data


def test_split_pcm_gives_one_mono_stream_per_channel_with_labels() -> None:
    config = raw(channels=2, channel_mode="split", channel_labels=("agent", "caller"))
    session = Source("s", config, upstream_rate=16000)
    left, right = session.streams
    assert (left.label, right.label) == ("agent", "caller")
    assert left.params.channels == right.params.channels == 1
    data = stereo([(1, -1), (2, -2), (3, -3)])
    feed(session, 0, data[:5])  # splits inside a frame
    feed(session, 1, data[5:])
    for s in (left, right):
        s.connected(None)
    assert list(left.outgoing()) == [struct.pack("<hhh", 1, 2, 3)]
    assert list(right.outgoing()) == [struct.pack("<hhh", -1, -2, -3)]


def test_split_mulaw_deinterleaves_bytes_without_decoding() -> None:
    config = SessionConfig(
        encoding="mulaw", sample_rate=8000, channels=2, channel_mode="split", endpoint="turns"
    )
    session = Source("s", config, upstream_rate=16000)
    feed(session, 0, bytes([10, 20, 11, 21, 12]))
    left, right = session.streams
    for s in (left, right):
        s.connected(None)
    assert list(left.outgoing()) == [bytes([10, 11])]
    assert list(right.outgoing()) == [bytes([20, 21])]
    assert left.params.encoding == "mulaw"


def test_resume_position_waits_for_every_stream_and_for_emitted_events() -> None:
    config = raw(channels=2, channel_mode="split")
    session = Source("s", config, upstream_rate=16000)
    left, right = session.streams
    for s in (left, right):
        s.connected(None)
    feed(session, 10, b"\x00" * 4 * 800)  # 100 ms
    feed(session, 11, b"\x00" * 4 * 800)
    for s in (left, right):
        list(s.outgoing())
    left.on_message(Transcript(text="a", start_ms=0, duration_ms=200))
    right.on_message(Transcript(text="b", start_ms=0, duration_ms=100))
    position = session.position()
    assert position is not None
    assert position.offset == 10
    for s in (left, right):
        s.events_emitted()
    position = session.position()
    assert position is not None
    assert (position.offset, position.record_byte, position.restart.byte) == (11, 3200, 3200)
    assert position.restart.frame == 800
    assert [s.covered for s in position.streams] == [1600, 800]
    right.on_message(Transcript(text="c", start_ms=100, duration_ms=100))
    right.events_emitted()
    position = session.position()
    assert position is not None
    assert (position.offset, position.restart.byte) == (12, 6400)


def test_flush_record_is_done_only_once_its_confirmation_is_emitted() -> None:
    session = Source("s", raw(), upstream_rate=16000)
    [stream] = session.streams
    stream.connected(None)
    feed(session, 5, b"\x00" * 1600, "flush")
    out = list(stream.outgoing())
    assert isinstance(out[-1], FlushRequest)
    flushes = [out[-1].id]
    position = session.position()
    assert position is not None
    assert position.offset == 5
    stream.on_message(FlushConfirmation(id=flushes[0]))
    stream.events_emitted()
    position = session.position()
    assert position is not None
    assert (position.offset, position.restart.byte) == (6, 1600)
    assert session.uncovered_seconds == 0


def test_end_record_is_never_done_while_the_session_is_open() -> None:
    session = Source("s", raw(), upstream_rate=16000)
    [stream] = session.streams
    stream.connected(None)
    feed(session, 1, b"\x00" * 1600)
    feed(session, 2, b"", "end")
    list(stream.outgoing())
    stream.on_message(Transcript(text="x", start_ms=0, duration_ms=100))
    stream.events_emitted()
    position = session.position()
    assert position is not None
    assert (position.offset, position.record_byte) == (2, 1600)


def _checkpoint(source: Source) -> Checkpoint:
    position = source.position()
    assert position is not None
    return Checkpoint(
        session_id="s",
        partition=0,
        offset=position.offset,
        record_byte=position.record_byte,
        restart=position.restart,
        config=source.config,
        streams=position.streams,
    )


def _sent_audio(stream: ChannelStream) -> bytes:
    return b"".join(x for x in stream.outgoing() if isinstance(x, bytes))


def test_a_resumed_session_sends_exactly_the_uncovered_audio_at_the_same_frames() -> None:
    config = raw(channels=2, channel_mode="split", sample_rate=8000)
    records = [bytes((i * 7 + j) % 256 for j in range(2407)) for i in range(6)]  # odd sizes
    first = Source("s", config, upstream_rate=16000)
    for s in first.streams:
        s.connected(None)
    for offset, audio in enumerate(records[:4]):
        feed(first, offset, audio)
    for s in first.streams:
        _sent_audio(s)
    first.streams[0].on_message(Transcript(text="a", start_ms=0, duration_ms=250))
    first.streams[1].on_message(Transcript(text="b", start_ms=0, duration_ms=180))
    for s in first.streams:
        s.events_emitted()
    saved = Checkpoint.from_bytes(_checkpoint(first).to_bytes())
    for offset, audio in enumerate(records[4:], start=4):
        feed(first, offset, audio)

    second = Source("s", saved.config, upstream_rate=16000, resume=saved)
    for offset, audio in enumerate(records):
        if offset >= saved.offset:
            feed(second, offset, audio)
    for old, new in zip(first.streams, second.streams, strict=True):
        assert (new.covered, new.frames_in) == (old.covered, old.frames_in)
        new.connected(None)
        old.disconnected()
        old.connected(None)  # a reconnect on the first owner replays the same
        assert _sent_audio(new) == _sent_audio(old)


# -- undecodable audio (issue 12): dead-lettered wherever it is found ---------------


def container() -> Source:
    return Source("s", SessionConfig(), upstream_rate=16000)


def settle(source: Source) -> None:
    while source.busy:
        source.process()


def test_a_stream_that_never_produces_audio_dead_letters_every_record() -> None:
    source = container()
    source.add(0, b"\x00\x01junk", "audio", "r0")
    source.add(1, b"\x02\x03junk", "audio", "r1")  # 12 bytes: no container header
    settle(source)
    assert [(r.offset, r.record, r.code) for r in source.rejected] == [
        (0, "r0", "undecodable_audio"),
        (1, "r1", "undecodable_audio"),
    ]


def test_a_header_cut_short_is_dead_lettered_at_the_end() -> None:
    source = container()
    source.add(0, wav(data=b"\x00" * 100)[:30], "audio", "cut")
    settle(source)
    assert source.failed is None  # nothing to say yet: more bytes may come
    source.add(1, b"", "end", "end")
    settle(source)
    assert [(r.record, r.code) for r in source.rejected] == [
        ("cut", "undecodable_audio"),
        ("end", "session_failed"),
    ]


def test_garbage_after_good_audio_keeps_the_good_part() -> None:
    # MP3 (like M4A) fails on garbage; OGG and WebM resynchronise past it.
    mp3 = encode(struct.pack("<h", 3000) * 16000 * 20, 16000, 1, "mp3")
    good = mp3[: len(mp3) // 2]
    source = container()
    for i in range(0, len(good), 4000):
        source.add(i, good[i : i + 4000], "audio", f"good{i}")
        settle(source)
    frames = source.streams[0].frames_in
    assert frames > 8000
    source.add(10**6, random.Random(1).randbytes(20000), "audio", "garbage")
    source.add(10**6 + 1, b"", "end", "end")
    settle(source)
    assert source.failed is not None
    assert [(r.record, r.code) for r in source.rejected] == [
        ("garbage", "undecodable_audio"),
        ("end", "session_failed"),
    ]
    assert source.streams[0].frames_in >= frames  # what was decoded stays, to be transcribed


def test_split_mode_takes_at_most_ten_channels() -> None:
    pcm = b"\x00\x00" * 12 * 1600
    data = encode(pcm, 16000, 12, "wav")
    source = Source("s", SessionConfig(channel_mode="split"), upstream_rate=16000)
    source.add(0, data, "audio", "wide")
    source.add(1, b"", "end", "end")
    settle(source)
    assert source.rejected[0].code == "undecodable_audio"
    assert "10 channels" in source.rejected[0].detail


# -- G.711 on realtime (issue 14): the realtime endpoint documents pcm_s16le only ----


def test_g711_is_expanded_for_realtime_and_passed_through_for_turns() -> None:
    mulaw = bytes(range(256))
    realtime = Source("s", raw(encoding="mulaw"), upstream_rate=16000)
    feed(realtime, 0, mulaw)
    [stream] = realtime.streams
    assert stream.params.encoding == "pcm_s16le"
    assert stream.params.sample_rate == 8000
    stream.connected(None)
    assert _sent_audio(stream) == mulaw_to_s16(mulaw)
    for source in (
        Source("t", raw(encoding="mulaw", endpoint="turns"), upstream_rate=16000),
        Source("g", raw(encoding="mulaw"), upstream_rate=16000, g711_upstream=True),
    ):
        feed(source, 0, mulaw)
        [untouched] = source.streams
        assert untouched.params.encoding == "mulaw"
        untouched.connected(None)
        assert _sent_audio(untouched) == mulaw


def test_split_alaw_is_expanded_per_channel() -> None:
    source = Source(
        "s", raw(encoding="alaw", channels=2, channel_mode="split"), upstream_rate=16000
    )
    feed(source, 0, bytes([1, 2, 3]))  # a frame and a half
    feed(source, 1, bytes([4]))
    left, right = source.streams
    for stream in (left, right):
        stream.connected(None)
    assert _sent_audio(left) == alaw_to_s16(bytes([1, 3]))
    assert _sent_audio(right) == alaw_to_s16(bytes([2, 4]))


def test_input_waits_as_bytes_while_the_streams_hold_enough_audio() -> None:
    source = Source("s", raw(), upstream_rate=16000, max_held_s=1.0)  # 8 kHz
    [stream] = source.streams
    stream.connected(None)
    source.add(0, b"\x00\x00" * 16000, "audio")  # 2 s: over the bound once pushed
    source.add(1, b"\x00\x00" * 8000, "audio")
    source.process()
    assert source.busy  # record 1 waits, undecoded
    assert source.held
    assert stream.frames_in == 16000
    list(stream.outgoing())
    stream.on_message(Transcript(text="x", start_ms=0, duration_ms=1500))  # covers 1.5 s
    source.process()
    assert not source.busy
    assert stream.frames_in == 24000
