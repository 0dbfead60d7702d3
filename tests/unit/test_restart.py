"""Restart points: the container scanners behind ContainerDecoder (no I/O)."""

from __future__ import annotations

import struct

from workers.restart import _mpeg_frame, scanner_for


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
