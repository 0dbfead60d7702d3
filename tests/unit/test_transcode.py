"""ContainerDecoder's bounds (issue 12): hostile audio costs bounded time and memory.

PyAV decodes real audio here (no I/O). Format, expansion and step bounds.
"""

from __future__ import annotations

import struct
import time

import pytest

from emulator.samples import encode
from tests.fuzz.hostile import wav
from workers.errors import DecodeError
from workers.transcode import ContainerDecoder

TONE = struct.pack("<h", 3000) * 16000  # 1 s at 16 kHz


def decode_all(data: bytes, **kw: object) -> bytes:
    with ContainerDecoder(**kw) as decoder:  # type: ignore[arg-type]
        return decoder.feed(data) + decoder.flush()


def test_a_one_hertz_wav_is_refused_before_it_expands() -> None:
    # issue 12: 8 KiB declaring 1 Hz decoded to 2.3 h of audio (1.2 GiB, the loop blocked 4-5 s)
    started = time.monotonic()
    with pytest.raises(DecodeError, match="sample rate 1 Hz"):
        decode_all(wav(rate=1, bits=8, data=b"\x80" * 8192))
    assert time.monotonic() - started < 2.0


def test_decoded_audio_is_bounded_per_input_byte() -> None:
    data = encode(TONE * 4, 16000, 1, "flac")  # 4 s of a constant tone: FLAC packs it small
    with pytest.raises(DecodeError, match="frames per input byte"):
        decode_all(data, max_frames_per_byte=1.0, allowance_s=0.5)
    assert len(decode_all(data)) == len(TONE) * 4  # the default bound lets real audio through


def test_a_step_returns_within_its_budget_and_bounded_output() -> None:
    data = encode(TONE * 30, 16000, 1, "wav")  # 30 s in one write
    with ContainerDecoder(step_frames=16000) as decoder:
        decoder.write(data)
        decoder.finish()
        out, steps = b"", 0
        while not decoder.idle or steps == 0:
            started = time.monotonic()
            chunk = decoder.step(0.02)
            assert time.monotonic() - started < 0.5  # the budget, plus scheduling noise
            assert len(chunk) <= 2 * 16000 * 3  # about a step of audio (frames of the codec)
            out += chunk
            steps += 1
        out += decoder.step(0.02)
    assert steps > 5
    assert len(out) == len(TONE) * 30


def test_arm_calls_back_when_a_busy_decoder_can_be_stepped_again() -> None:
    data = encode(TONE * 10, 16000, 1, "wav")
    calls: list[int] = []
    with ContainerDecoder(step_frames=8000) as decoder:
        decoder.on_ready = lambda: calls.append(1)
        decoder.write(data)
        decoder.step(0.0)
        decoder.arm()
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.001)  # the decode thread reports; nothing else to wait on here
        assert calls


def test_restart_points_are_session_frames_from_the_epoch() -> None:
    data = encode(TONE * 3, 16000, 1, "wav")
    with ContainerDecoder(epoch_frame=48000, resume_every_s=1.0) as decoder:
        decoder.feed(data)
        frames = [p.frame for p in decoder.restart_points]
    assert frames[:3] == [48000, 64000, 80000]
