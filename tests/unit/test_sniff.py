"""sniff_container and split_channels (no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.transcode import sniff_container, split_channels


@pytest.mark.parametrize(
    ("prefix", "name"),
    [
        (b"RIFF\xff\xff\xff\xffWAVEfmt ", "wav"),
        (b"OggS\x00\x02" + bytes(8), "ogg"),
        (b"fLaC\x00\x00\x00\x22" + bytes(4), "flac"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81" + bytes(4), "webm"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x23" + bytes(2), "mp3"),
        (b"\xff\xfb\x90\x64" + bytes(8), "mp3"),  # MPEG-1 Layer III, 128 kbit/s
        (b"\xff\xf3\x64\xc4" + bytes(8), "mp3"),  # MPEG-2 Layer III
        (b"\x00\x00\x00\x1cftypiso5" + bytes(4), "mp4"),
    ],
)
def test_known_magic(prefix: bytes, name: str) -> None:
    assert sniff_container(prefix) == name


@pytest.mark.parametrize(
    "prefix",
    [
        b"",
        b"RIFF\x00\x00\x00\x00AVI ",
        b"\xff\xfb\xf0\x64" + bytes(8),  # bad bitrate index 15
        b"\xff\xe9\x90\x64" + bytes(8),  # reserved MPEG version
        b"\xff\xf1\x50\x80" + bytes(8),  # ADTS AAC (layer bits 00): not MPEG audio
        b"hello, world!",
        bytes(12),
    ],
)
def test_unknown_or_invalid(prefix: bytes) -> None:
    assert sniff_container(prefix) is None


def test_split_channels_deinterleaves() -> None:
    frames = np.array([[1, -1], [2, -2], [3, -3]], dtype="<i2")
    left, right = split_channels(frames.tobytes(), 2)
    assert np.frombuffer(left, "<i2").tolist() == [1, 2, 3]
    assert np.frombuffer(right, "<i2").tolist() == [-1, -2, -3]


def test_split_channels_mono_and_empty() -> None:
    assert split_channels(b"\x01\x00", 1) == [b"\x01\x00"]
    assert split_channels(b"", 2) == [b"", b""]


def test_split_channels_rejects_partial_frames() -> None:
    with pytest.raises(ValueError, match="whole number"):
        split_channels(b"\x00\x00\x00", 2)
