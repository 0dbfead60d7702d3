"""Restart points: the container scanners behind ContainerDecoder (no I/O)."""

from __future__ import annotations

import struct

import pytest

from tests.fuzz.hostile import BARE_OGG_PAGE, ZERO_BLOCK_WAV, ogg_page, opus_head, wav
from workers.errors import DecodeError
from workers.restart import RestartPoint, _mpeg_frame, scanner_for


def _wav_header(data_size: int, rate: int = 8000, channels: int = 1) -> bytes:
    block = 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + data_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_size)
    )


def test_wav_header_and_points_in_any_split() -> None:
    stream = _wav_header(3200) + bytes(3200)
    scanner = scanner_for("wav")
    assert scanner is not None
    points = []
    for i in range(len(stream)):
        points += scanner.feed(stream[i : i + 1], i)
    assert scanner.header == stream[:44]
    assert [(p[0], p[1]) for p in points] == [(44 + 1600 * k, 800 * k) for k in range(3)]
    # the restart header advertises only the data left after the offset
    assert struct.unpack_from("<I", points[1][2], 40)[0] == 1600


def test_wav_indefinite_size_keeps_header() -> None:
    header = bytearray(_wav_header(0))
    struct.pack_into("<I", header, 40, 0xFFFFFFFF)
    scanner = scanner_for("wav")
    assert scanner is not None
    points = scanner.feed(bytes(header) + bytes(1700), 0)
    assert points[1][2] == bytes(header)


def test_mpeg_frame_header_sizes() -> None:
    frame = _mpeg_frame(b"\xff\xfb\x90\x64")  # MPEG-1 L3 128 kbit/s 44.1 kHz
    assert frame is not None
    assert (frame.size, frame.samples, frame.rate) == (417, 1152, 44100)
    frame = _mpeg_frame(b"\xff\xf3\x68\xc4")  # MPEG-2 L3 48 kbit/s 16 kHz, mono
    assert frame is not None
    assert (frame.size, frame.samples, frame.rate, frame.side_info) == (216, 576, 16000, 9)
    assert _mpeg_frame(b"\xff\xfb\xf0\x64") is None


def test_unsupported_containers_have_no_scanner() -> None:
    assert scanner_for("webm") is None
    assert scanner_for(None) is None


# -- hostile headers (issue 12): refused at once, never a loop or a division ------


def test_a_wav_with_block_size_zero_is_refused_not_looped_on() -> None:
    scanner = scanner_for("wav")
    assert scanner is not None
    with pytest.raises(DecodeError, match="0 channels"):  # and block size 0
        scanner.feed(ZERO_BLOCK_WAV, 0)


@pytest.mark.parametrize(
    ("rate", "channels", "message"),
    [(0, 1, "sample rate 0 Hz"), (1, 1, "sample rate 1 Hz"), (16000, 65535, "65535 channels")],
)
def test_wav_formats_no_audio_has_are_refused(rate: int, channels: int, message: str) -> None:
    scanner = scanner_for("wav")
    assert scanner is not None
    with pytest.raises(DecodeError, match=message):
        scanner.feed(wav(rate=rate, channels=channels, block_align=2), 0)


def test_an_ogg_page_that_is_no_opus_or_vorbis_header_gives_no_restart_point() -> None:
    scanner = scanner_for("ogg")
    assert scanner is not None
    assert scanner.feed(BARE_OGG_PAGE + BARE_OGG_PAGE, 0) == []


def test_an_opus_head_with_no_channels_is_refused() -> None:
    scanner = scanner_for("ogg")
    assert scanner is not None
    with pytest.raises(DecodeError, match="0 channels"):
        scanner.feed(ogg_page(opus_head(0)), 0)


def test_restart_points_round_trip_through_json() -> None:
    point = RestartPoint(byte=44, frame=16000, header=b"RIFF\x00")
    assert RestartPoint.model_validate_json(point.model_dump_json()) == point
