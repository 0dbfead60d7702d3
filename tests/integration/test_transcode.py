"""ContainerDecoder with real PyAV encoding/decoding, in process.

Each format is encoded by ``emulator.samples`` and decoded whole, in random
splits and (for a short clip) one byte at a time; the outputs must be equal.
"""

from __future__ import annotations

import io
import random
import struct
import threading
import time
from collections.abc import Iterator

import av
import numpy as np
import pytest

from emulator import samples
from workers.errors import DecodeError
from workers.transcode import ContainerDecoder, RawDecoder, split_channels

RATE = 16000
CONTAINERS = ["wav", "wav-stream", "ogg-opus", "flac", "webm-opus", "mp3", "m4a-aac",
              "m4a-faststart"]  # fmt: skip
LOSSLESS = {"wav", "wav-stream", "flac"}
# Lossy formats may pad the end: MP3 end padding is only trimmed by FFmpeg on
# seekable input; AAC and Opus are trimmed by the container (edit list / pre-skip).
# AAC output is whole 1024-sample frames: the edit list trims the priming at
# the start, but FFmpeg's mov demuxer leaves the padded end of the last frame.
# Extra audio a lossy decode may return at the end: from a non-seekable stream
# FFmpeg cannot trim MP3's end padding (the encoder pads to whole frames: up to
# 576 samples = 36 ms at 16 kHz, plus part of its delay), and AAC pads to whole
# 1024-sample frames (64 ms).
DURATION_SLACK_MS = {"mp3": 72.0, "m4a-aac": 64.0, "m4a-faststart": 64.0}


@pytest.fixture(scope="module")
def speech() -> bytes:
    return samples.speech("The quick brown fox jumps over the lazy dog.", RATE)


def decode(data: bytes, sizes: Iterator[int] | None = None, **kwargs: object) -> bytes:
    decoder = ContainerDecoder(**kwargs)  # type: ignore[arg-type]
    try:
        out, pos = [], 0
        while pos < len(data):
            step = len(data) if sizes is None else next(sizes)
            out.append(decoder.feed(data[pos : pos + step]))
            pos += step
        out.append(decoder.flush())
        return b"".join(out)
    finally:
        decoder.close()


def random_sizes(seed: int, top: int) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield rng.randint(1, top)


def ones() -> Iterator[int]:
    while True:
        yield 1


def decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "container-decoder"]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    for thread in decoder_threads():
        thread.join(10)  # a decoder that timed out may still be finishing
    assert decoder_threads() == []


@pytest.mark.parametrize("fmt", CONTAINERS)
def test_random_splits_equal_whole_decode(speech: bytes, fmt: str) -> None:
    data = samples.encode(speech, RATE, 1, fmt)
    whole = decode(data)
    for seed, top in [(1, 7), (2, 500), (3, 20_000)]:
        assert decode(data, random_sizes(seed, top)) == whole, (seed, top)
    if fmt in LOSSLESS:
        assert whole == speech
    slack = DURATION_SLACK_MS.get(fmt, 3.0) * RATE / 1000
    assert 0 <= len(whole) // 2 - len(speech) // 2 <= slack


@pytest.mark.parametrize("fmt", CONTAINERS)
def test_one_byte_feeds_of_a_short_clip(speech: bytes, fmt: str) -> None:
    data = samples.encode(speech[: RATE // 2 * 2], RATE, 1, fmt)  # 0.5 s
    assert decode(data, ones()) == decode(data)


def test_properties_after_first_audio(speech: bytes) -> None:
    stereo = np.repeat(np.frombuffer(speech, "<i2"), 2).tobytes()
    with ContainerDecoder() as decoder:
        assert (decoder.source_rate, decoder.codec) == (None, None)
        pcm = decoder.feed(samples.encode(stereo, RATE, 2, "ogg-opus")) + decoder.flush()
        assert (decoder.container, decoder.codec) == ("ogg", "opus")
        assert (decoder.source_rate, decoder.source_channels) == (48000, 2)
        assert decoder.samples_out == len(pcm) // 2


def test_keep_channels_for_split_mode(speech: bytes) -> None:
    left = np.frombuffer(speech, "<i2")
    stereo = np.stack([left, left // 2], axis=1).tobytes()
    pcm = decode(samples.encode(stereo, RATE, 2, "flac"), target_channels=None)
    assert pcm == stereo
    assert split_channels(pcm, 2) == [speech, (left // 2).tobytes()]


def test_resamples_to_target_rate(speech: bytes) -> None:
    pcm = decode(samples.encode(speech, RATE, 1, "wav"), target_rate=8000)
    assert abs(len(pcm) // 2 - len(speech) // 4) <= 1


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_indefinite_length_wav(speech: bytes, size: int) -> None:
    wav = bytearray(samples.encode(speech, RATE, 1, "wav-stream"))
    struct.pack_into("<I", wav, 4, size)
    data_at = wav.index(b"data")
    struct.pack_into("<I", wav, data_at + 4, size)
    assert decode(bytes(wav), random_sizes(4, 300)) == speech


@pytest.mark.parametrize("size", [100, 5000, 300_000])
def test_garbage_raises_decode_error(size: int) -> None:
    junk = random.Random(size).randbytes(size)
    with pytest.raises(DecodeError, match="cannot decode audio") as info:
        decode(junk, random_sizes(5, 4096))
    assert info.value.code == "undecodable_audio"
    assert info.value.__cause__ is not None


def test_truncated_header_then_flush_raises() -> None:
    with pytest.raises(DecodeError):
        decode(b"RIFF\x24\x00\x00\x00WAVEfmt ")


def test_close_mid_stream_stops_the_thread(speech: bytes) -> None:
    data = samples.encode(speech, RATE, 1, "flac")
    decoder = ContainerDecoder()
    decoder.feed(data[: len(data) // 2])
    assert len(decoder_threads()) == 1
    decoder.close()
    decoder.close()
    assert decoder_threads() == []
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")


def ffmpeg_decode(data: bytes, channels: int) -> bytes:
    """What FFmpeg's own demuxer and decoder make of a whole file."""
    layout = "mono" if channels == 1 else "stereo"
    resampler = av.AudioResampler(format="s16", layout=layout, rate=RATE)
    out = []
    with av.open(io.BytesIO(data)) as box:
        for frame in box.decode(audio=0):
            out += resampler.resample(frame)
    out += resampler.resample(None)
    return b"".join(bytes(f.planes[0])[: f.samples * 2 * channels] for f in out)


@pytest.mark.parametrize("channels", [1, 2])
def test_ogg_opus_is_decoded_without_a_thread_exactly_as_ffmpeg_demuxes_it(
    speech: bytes, channels: int
) -> None:
    """Ogg/Opus (the usual container of live calls) is split into packets
    here and decoded on the caller's thread: no hand-off per record, and the
    same samples as FFmpeg's Ogg demuxer, from the start and after a restart."""
    mono = np.frombuffer(speech, "<i2")
    pcm = mono.tobytes() if channels == 1 else np.stack([mono, mono // 2], axis=1).tobytes()
    data = samples.encode(pcm, RATE, channels, "ogg-opus")
    decoder = ContainerDecoder(target_channels=None, resume_every_s=0.5)
    try:
        first = decoder.feed(data[: len(data) // 2])
        assert first
        assert decoder_threads() == []
        whole = first + decoder.feed(data[len(data) // 2 :]) + decoder.flush()
        points = decoder.restart_points
    finally:
        decoder.close()
    assert whole == ffmpeg_decode(data, channels)
    assert len(points) >= 3
    for point in points[1:3]:
        restarted = point.header + data[point.byte :]
        mine = decode(restarted, random_sizes(6, 900), target_channels=None)
        assert mine == ffmpeg_decode(restarted, channels)


def test_chained_ogg_opus_streams_decode_one_after_the_other(speech: bytes) -> None:
    """A producer whose encoder restarts mid-call sends a second Ogg stream
    after the first: FFmpeg's demuxer decodes both, and so does this path."""
    first = samples.encode(speech, RATE, 1, "ogg-opus")
    second = samples.encode(speech[: len(speech) // 4 * 2], RATE, 1, "ogg-opus")
    chained = first + second
    mine = decode(chained, random_sizes(8, 700))
    assert mine == ffmpeg_decode(chained, 1)
    assert len(mine) > len(decode(first)) + len(speech) // 3


def test_a_broken_ogg_page_mid_stream_is_undecodable_audio(speech: bytes) -> None:
    data = samples.encode(speech, RATE, 1, "ogg-opus")
    cut = len(data) // 2
    with pytest.raises(DecodeError) as info:
        decode(data[:cut] + b"junk" * 10 + data[cut:], random_sizes(7, 500))
    assert info.value.code == "undecodable_audio"


def test_stall_times_out_with_decode_error(speech: bytes) -> None:
    # A zero budget: the wait gives up before the thread can take the bytes
    # (the bytes are queued and checked under one lock hold, so no race).
    decoder = ContainerDecoder(timeout=0.0)
    with pytest.raises(DecodeError, match="no progress"):
        decoder.feed(samples.encode(speech, RATE, 1, "wav"))
    decoder.close()


@pytest.mark.parametrize("fmt", ["wav", "wav-stream", "ogg-opus", "mp3"])
def test_resume_from_header_and_later_chunk(speech: bytes, fmt: str) -> None:
    data = samples.encode(speech, RATE, 1, fmt)
    decoder = ContainerDecoder(resume_every_s=0.5)
    try:
        original = decoder.feed(data) + decoder.flush()
        points = decoder.restart_points
    finally:
        decoder.close()
    assert decoder.header_bytes is not None
    assert len(points) >= 3
    for point in points[1:3]:
        resumed = decode(point.header + data[point.byte :])
        tail = original[point.frame * 2 :]
        if fmt.startswith("wav"):
            assert resumed == tail
        else:
            # Restarting on the final (EOS) page loses Opus end trimming: FFmpeg
            # can only trim when it saw the previous page's granule.
            assert 0 <= len(resumed) - len(tail) <= 20 * RATE // 1000 * 2
            assert best_lag(tail, resumed) == 0
            assert correlation(tail[4000:], resumed[4000:]) > 0.9  # after convergence


def test_resume_point_bookkeeping(speech: bytes) -> None:
    with ContainerDecoder(resume_every_s=0.5) as decoder:
        decoder.feed(samples.encode(speech, RATE, 1, "wav"))
        points = decoder.restart_points
        assert decoder.restart_point_before(points[2].frame + 1) == points[2]
        decoder.forget_restart_points(points[2].frame)
        assert decoder.restart_points == points[2:]


def test_raw_mulaw_matches_ffmpeg(speech: bytes) -> None:
    coded = samples.encode(speech, 8000, 1, "mulaw")
    mine = RawDecoder("mulaw", 8000, 1).feed(coded)
    reference = np.frombuffer(speech, "<i2").astype(int)
    assert np.max(np.abs(np.frombuffer(mine, "<i2") - reference)) <= 1024  # G.711 step


def best_lag(a: bytes, b: bytes, window: int = 600) -> int:
    x = np.frombuffer(a, "<i2").astype(float)
    y = np.frombuffer(b, "<i2").astype(float)
    n = min(len(x), len(y)) - 2 * window
    scores = [float(np.dot(x[window + k : window + k + n], y[window : window + n]))
              for k in range(-window, window)]  # fmt: skip
    return int(np.argmax(scores)) - window


def correlation(a: bytes, b: bytes) -> float:
    n = min(len(a), len(b)) // 2
    x = np.frombuffer(a, "<i2", count=n).astype(float)
    y = np.frombuffer(b, "<i2", count=n).astype(float)
    return float(np.corrcoef(x, y)[0, 1])


@pytest.mark.parametrize("fmt", ["ogg-opus", "mp3", "m4a-aac", "flac"])
def test_decode_speed_report(speech: bytes, fmt: str) -> None:
    clip = speech * 8  # ~20 s
    data = samples.encode(clip, RATE, 1, fmt)
    started = time.perf_counter()
    pcm = decode(data, random_sizes(6, 4096))
    elapsed = time.perf_counter() - started
    audio_s = len(clip) / 2 / RATE
    print(f"\n{fmt}: {audio_s / elapsed:.0f}x real time in 4 KiB feeds ({audio_s:.1f} s audio)")
    assert pcm
