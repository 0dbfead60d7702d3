"""The worker as a real process: real broker, real emulator, real encoded audio."""

from __future__ import annotations

import re

import numpy as np
import pytest

from emulator.samples import encode
from emulator.tones import expected_finals, synthesize
from schemas.events import SessionEvent, TranscriptEvent, TurnEvent
from tests.e2e.harness import (
    Chunk,
    Outputs,
    Stack,
    WorkerProcess,
    dlq_records,
    produce_sessions,
    session_records,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(240)]

UTTERANCES = [["alpha", "bravo"], ["charlie", "delta", "echo"], ["foxtrot"]]
LOSSY_TOLERANCE_MS = 30


def pcm16(rate: int = 16000, utterances: list[list[str]] = UTTERANCES) -> bytes:
    return synthesize(utterances, sample_rate=rate)


def to_mulaw(pcm: bytes) -> bytes:
    """G.711 mu-law encode (independent of the worker's decoder tables)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def assert_finals(
    got: list[tuple[str, int, int]], want: list[tuple[str, int, int]], tol: int
) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, gs, gd), (_, ws, wd) in zip(got, want, strict=True):
        assert abs(gs - ws) <= tol
        assert abs(gd - wd) <= 2 * tol


async def test_concurrent_sessions_of_mixed_formats_give_exact_finals(
    stack: Stack, worker: WorkerProcess
) -> None:
    want = expected_finals(UTTERANCES)
    pcm = pcm16()
    pcm8 = pcm16(8000)
    inputs = {
        "pcm": (pcm, [("stt-encoding", b"pcm_s16le"), ("stt-sample-rate", b"16000")], 0),
        "mulaw": (to_mulaw(pcm8), [("stt-encoding", b"mulaw"), ("stt-sample-rate", b"8000")], 0),
        "wav": (encode(pcm, 16000, 1, "wav-stream"), [], 0),
        "flac": (encode(pcm, 16000, 1, "flac"), [], 0),
        "ogg": (encode(pcm, 16000, 1, "ogg-opus"), [], LOSSY_TOLERANCE_MS),
        "mp3": (encode(pcm, 16000, 1, "mp3"), [], LOSSY_TOLERANCE_MS),
        "webm": (encode(pcm, 16000, 1, "webm-opus"), [], LOSSY_TOLERANCE_MS),
    }
    sessions = {}
    for name, (data, headers, _) in inputs.items():
        for copy in range(2):
            # Odd chunk sizes: containers are cut anywhere, mid-page and mid-frame.
            sessions[f"{name}-{copy}"] = session_records(
                data, chunk_bytes=1999 + 7 * copy, first_headers=headers
            )
    async with Outputs(stack) as out:
        await produce_sessions(stack, sessions)
        await out.until(out.ended(sessions), timeout_s=120)
        for sid in sessions:
            tol = inputs[sid.split("-")[0]][2]
            assert_finals(out.finals(sid), want, tol)
            [ended] = out.events("session_ended", sid)
            assert isinstance(ended, SessionEvent)
            assert ended.finals == len(want)
            assert ended.audio_seconds is not None
            assert ended.audio_seconds > 3.0


async def test_turns_come_in_protocol_order(stack: Stack, worker: WorkerProcess) -> None:
    # A short pause continues the turn, a long one ends it.
    pcm = synthesize([["alpha"], ["bravo"]], pause_ms=600) + synthesize([["charlie"]], lead_ms=1500)
    headers = [("stt-encoding", b"pcm_s16le"), ("stt-endpoint", b"turns")]
    async with Outputs(stack) as out:
        await produce_sessions(
            stack, {"t1": session_records(pcm, chunk_bytes=3200, first_headers=headers)}
        )
        await out.until(out.ended(["t1"]))
    turns = [e for e in out.events(session="t1") if isinstance(e, TurnEvent)]
    order = [(e.type, e.turn_index) for e in turns]
    assert order[0] == ("turn_start", 0)
    ends = [e for e in turns if e.type == "turn_end"]
    assert [e.text for e in ends] == ["alpha bravo", "charlie"]
    assert [e.turn_index for e in ends] == [0, 1]
    for index in (0, 1):
        kinds = [k for k, i in order if i == index]
        assert kinds[0] == "turn_start"
        assert kinds[-1] == "turn_end"
        body = "".join(
            {"turn_end_candidate": "c", "turn_continuation": "n"}[k] for k in kinds[1:-1]
        )
        assert re.fullmatch(r"c(nc)*", body), kinds


async def test_split_stereo_gives_labelled_events_per_channel(
    stack: Stack, worker: WorkerProcess
) -> None:
    left = np.frombuffer(synthesize([["alpha", "bravo"]], lead_ms=200), dtype="<i2")
    right = np.frombuffer(synthesize([["golf", "hotel"]], lead_ms=1400), dtype="<i2")
    n = max(len(left), len(right))
    stereo = np.zeros((n, 2), dtype="<i2")
    stereo[: len(left), 0] = left
    stereo[: len(right), 1] = right
    ogg = encode(stereo.tobytes(), 16000, 2, "ogg-opus")
    headers = [("stt-channel-mode", b"split"), ("stt-channel-labels", b"agent,caller")]
    async with Outputs(stack) as out:
        await produce_sessions(
            stack, {"st": session_records(ogg, chunk_bytes=1500, first_headers=headers)}
        )
        await out.until(out.ended(["st"]))
    assert [f[0] for f in out.finals("st", channel=0)] == ["alpha bravo"]
    assert [f[0] for f in out.finals("st", channel=1)] == ["golf hotel"]
    labels = {
        (e.channel, e.label)
        for e in out.events("transcript", "st")
        if isinstance(e, TranscriptEvent)
    }
    assert labels == {(0, "agent"), (1, "caller")}


async def test_bad_records_go_to_the_dlq_and_the_partition_moves_on(
    stack: Stack, worker: WorkerProcess
) -> None:
    good = session_records(
        pcm16(), chunk_bytes=3200, first_headers=[("stt-encoding", b"pcm_s16le")]
    )
    bad = {
        "garbage": [Chunk(b"\x00\x01not audio at all" * 200), Chunk(b"", (("stt-kind", b"end"),))],
        "badhdr": [Chunk(b"\x00" * 320, (("stt-encoding", b"mp4"),))],
        "badkind": [Chunk(b"\x00" * 320, (("stt-kind", b"pause"),))],
    }
    # Same partition for all: the bad records come first, the good session after.
    async with Outputs(stack) as out:
        await produce_sessions(stack, {**bad}, interleave=False)
        await produce_sessions(stack, {"good": good})
        await out.until(out.ended(["good"]))
        assert [f[0] for f in out.finals("good")] == [" ".join(u) for u in UTTERANCES]
        [failed] = out.events("session_failed", "garbage")
        assert isinstance(failed, SessionEvent)
        assert failed.code == "undecodable_audio"
    # The garbage's audio, then its end record (its session failed), one each
    # for the bad headers.
    records = await dlq_records(stack, 4)
    codes: dict[str, list[str]] = {}
    for r in sorted(records, key=lambda r: r.offset):
        codes.setdefault(r.key.decode(), []).append(dict(r.headers)["stt-error-code"].decode())
    assert codes == {
        "garbage": ["undecodable_audio", "session_failed"],
        "badhdr": ["bad_header"],
        "badkind": ["bad_header"],
    }
    for record in records:
        headers = dict(record.headers)
        assert headers["stt-source-topic"] == stack.audio_topic.encode()
        assert int(headers["stt-source-offset"]) >= 0
        assert headers["stt-error-detail"]
        assert headers["ce_type"] == b"dev.reson8.kafka.dead_letter"
        assert headers["traceparent"]


async def test_flush_confirms_and_end_reports_statistics(
    stack: Stack, worker: WorkerProcess
) -> None:
    pcm = pcm16()
    chunks = session_records(pcm, chunk_bytes=3200, first_headers=[("stt-encoding", b"pcm_s16le")])
    middle = len(chunks) // 2
    chunks.insert(middle, Chunk(b"", (("stt-kind", b"flush"),)))
    async with Outputs(stack) as out:
        await produce_sessions(stack, {"fl": chunks})
        await out.until(out.ended(["fl"]))
    flushes = out.events("flush_confirmed", "fl")
    assert len(flushes) >= 2  # the explicit flush and the one `end` issues
    [ended] = out.events("session_ended", "fl")
    assert isinstance(ended, SessionEvent)
    assert ended.reconnects == 0
    assert ended.audio_seconds == pytest.approx(len(pcm) / 32000, abs=0.01)


async def test_trace_context_flows_from_input_to_every_output(
    stack: Stack, worker: WorkerProcess
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01".encode()
    chunks = session_records(
        pcm16(),
        chunk_bytes=3200,
        first_headers=[("stt-encoding", b"pcm_s16le"), ("traceparent", parent)],
    )
    async with Outputs(stack) as out:
        await produce_sessions(stack, {"tr": chunks})
        await out.until(out.ended(["tr"]))
    mine = [r for r in out.received if r.event.session_id == "tr"]
    assert mine
    for r in mine:
        assert r.headers["traceparent"].decode().split("-")[1] == trace_id
        assert r.headers["ce_id"].decode() == r.event.event_id
        assert r.headers["ce_specversion"] == b"1.0"
        assert r.headers["ce_type"].decode().endswith(r.event.type)


async def test_upstream_refusal_fails_only_its_session(stack: Stack, worker: WorkerProcess) -> None:
    base = [("stt-encoding", b"pcm_s16le")]
    sessions = {
        "refused": session_records(
            pcm16(), chunk_bytes=3200, first_headers=[*base, ("stt-custom-model-id", b"nope")]
        ),
        "fine": session_records(pcm16(), chunk_bytes=3200, first_headers=base),
    }
    async with Outputs(stack) as out:
        await produce_sessions(stack, sessions)
        await out.until(out.ended(sessions))
    [failed] = out.events("session_failed", "refused")
    assert isinstance(failed, SessionEvent)
    assert failed.code == "INVALID_REQUEST"
    assert "400" in (failed.detail or "")
    assert "test-key-not-secret" not in (failed.detail or "")
    assert [f[0] for f in out.finals("fine")] == [" ".join(u) for u in UTTERANCES]


async def test_changed_configuration_starts_a_new_connection_with_continuous_time(
    stack: Stack, worker: WorkerProcess
) -> None:
    first_utts, second_utts = [["alpha", "bravo"]], [["charlie"], ["delta", "echo"]]
    first = pcm16(16000, first_utts)
    second = to_mulaw(pcm16(8000, second_utts))
    offset_ms = len(first) // 32
    chunks = session_records(
        first, chunk_bytes=3200, first_headers=[("stt-encoding", b"pcm_s16le")], end=False
    ) + session_records(
        second,
        chunk_bytes=800,
        first_headers=[("stt-encoding", b"mulaw"), ("stt-sample-rate", b"8000")],
    )
    async with Outputs(stack) as out:
        await produce_sessions(stack, {"cc": chunks})
        await out.until(out.ended(["cc"]))
    want = expected_finals(first_utts) + [
        (text, start + offset_ms, duration)
        for text, start, duration in expected_finals(second_utts)
    ]
    assert_finals(out.finals("cc"), want, 0)
    assert len(out.events("upstream_connected", "cc")) == 2
    assert out.events("session_failed", "cc") == []
    [ended] = out.events("session_ended", "cc")
    assert isinstance(ended, SessionEvent)
    assert ended.finals == 3
