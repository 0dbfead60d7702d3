"""The emulator's own decoder (emulator.audio): G.711 against FFmpeg's, container
streams cut anywhere, whole prerecorded bodies, and a fuzz of untrusted bytes."""

from __future__ import annotations

import contextlib
import io

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.audio import AudioInput, decode_file, g711_to_s16, sniff
from emulator.errors import DecodeError
from emulator.samples import encode
from emulator.tones import synthesize

PCM = synthesize([["alpha", "bravo"]])  # 16 kHz mono s16le


def _ffmpeg_g711(data: bytes, encoding: str) -> bytes:
    with av.open(io.BytesIO(data), format=encoding, options={"sample_rate": "8000"}) as box:
        return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in box.decode(audio=0))


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_g711_tables_agree_with_ffmpeg(encoding: str) -> None:
    every_code = bytes(range(256))
    assert g711_to_s16(every_code, encoding) == _ffmpeg_g711(every_code, encoding)


@pytest.mark.parametrize("fmt", ["wav", "ogg-opus", "flac", "mp3", "webm-opus", "m4a-aac"])
def test_a_container_stream_cut_anywhere_decodes_to_the_same_audio(fmt: str) -> None:
    data = encode(PCM, 16000, 1, fmt)
    whole = AudioInput("auto")
    one = whole.feed(data) + whole.finish()
    whole.close()
    split = AudioInput("auto")
    pieces = b"".join(split.feed(data[i : i + 997]) for i in range(0, len(data), 997))
    pieces += split.finish()
    split.close()
    assert pieces == one
    assert abs(len(one) - len(PCM)) < 0.2 * len(PCM)  # codec delay, not lost audio


def test_raw_stereo_8k_is_mixed_and_resampled() -> None:
    stereo = np.repeat(np.frombuffer(PCM, dtype="<i2")[::2].reshape(-1, 1), 2, axis=1)
    decoder = AudioInput("pcm_s16le", 8000, 2)
    out = decoder.feed(stereo.astype("<i2").tobytes()[:-3]) + decoder.feed(b"\0\0\0")
    assert abs(len(out) - len(PCM)) < 1000


@pytest.mark.parametrize("fmt", ["wav", "m4a-faststart", "mp3", "flac"])
def test_decode_file_reads_whole_bodies(fmt: str) -> None:
    out = decode_file(encode(PCM, 16000, 1, fmt), "auto")
    assert abs(len(out) - len(PCM)) < 0.2 * len(PCM)


def test_unknown_bytes_are_refused_early() -> None:
    with pytest.raises(DecodeError, match="unknown container"):
        AudioInput("auto").feed(b"hello, this is not audio")
    with pytest.raises(DecodeError):
        decode_file(b"RIFF\0\0\0\0WAVEjunkjunk", "auto")
    assert sniff(b"\x1a\x45\xdf\xa3" + bytes(8)) == "webm"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    magic=st.sampled_from([b"RIFF\0\0\0\0WAVE", b"OggS", b"fLaC", b"ID3", b"\0\0\0\x18ftyp", b""]),
    body=st.binary(max_size=3000),
)
def test_fuzz_untrusted_bytes_only_raise_decode_errors(magic: bytes, body: bytes) -> None:
    data = magic + body
    stream = AudioInput("auto")
    try:
        stream.feed(data[:7])
        stream.feed(data[7:])
    except DecodeError:
        pass
    finally:
        stream.close()
    with contextlib.suppress(DecodeError):
        decode_file(data, "auto")
