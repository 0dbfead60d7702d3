"""Ogg pages into packets, and Opus packet durations (workers/ogg.py).

Pages are built here byte by byte (RFC 3533); the CRC is not checked by the
reader, as FFmpeg's demuxer does not by default.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.errors import DecodeError
from workers.ogg import MAX_PACKET, OggReader, opus_samples


def page(
    packets: list[bytes], granule: int, *, serial: int = 7, flags: int = 0, tail: bool = True
) -> bytes:
    """One page holding ``packets``; with ``tail=False`` the last one (a
    multiple of 255 bytes here) goes on to the next page."""
    lacing = bytearray()
    for i, packet in enumerate(packets):
        lacing += b"\xff" * (len(packet) // 255)
        if tail or i < len(packets) - 1:
            lacing.append(len(packet) % 255)
    header = b"OggS" + struct.pack("<BBqIII", 0, flags, granule, serial, 0, 0)
    return header + bytes([len(lacing)]) + bytes(lacing) + b"".join(packets)


def read_all(data: bytes, cuts: list[int]) -> list[tuple[bytes, int, bool, bool]]:
    reader, out, at = OggReader(), [], 0
    for cut in [*sorted(cuts), len(data)]:
        reader.push(data[at:cut])
        at = max(at, cut)
        while reader.has_page():
            out += [(p.data, p.granule, p.last_on_page, p.eos) for p in reader.packets()]
    return out


STREAM = (
    page([b"OpusHead-ish"], 0, flags=2)
    + page([b"a" * 10, b"b" * 300], 960)
    + page([b"c" * 510], -1, tail=False)  # c goes on
    + page([b"c" * 20, b"d"], 2880, flags=1)  # ...and ends here
    + page([b"x" * 5], 99, serial=8)  # another logical stream
    + page([b"e" * 3], 3840, flags=4)
)


def test_packets_come_whole_with_the_page_they_ended_on() -> None:
    assert read_all(STREAM, []) == [
        (b"OpusHead-ish", 0, True, False),
        (b"a" * 10, 960, False, False),
        (b"b" * 300, 960, True, False),
        (b"c" * 530, 2880, False, False),
        (b"d", 2880, True, False),
        (b"e" * 3, 3840, True, True),
    ]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_gives_the_same_packets(cuts: list[int]) -> None:
    assert read_all(STREAM, cuts) == read_all(STREAM, [])


def test_a_stream_chained_after_the_first_is_read_next() -> None:
    data = page([b"h1"], 0, flags=2) + page([b"a"], 960, flags=4)
    data += page([b"h2"], 0, serial=9, flags=2) + page([b"b"], 480, serial=9)
    packets = OggReader()
    packets.push(data)
    read = []
    while packets.has_page():
        read += [(p.data, p.bos, p.eos) for p in packets.packets()]
    assert read == [
        (b"h1", True, False),
        (b"a", False, True),
        (b"h2", True, False),
        (b"b", False, False),
    ]


def test_a_packet_cut_off_by_a_lost_page_is_dropped() -> None:
    data = page([b"h"], 0) + page([b"c" * 255], -1, tail=False) + page([b"n" * 4], 960)
    assert [p[0] for p in read_all(data, [])] == [b"h", b"n" * 4]


def test_bytes_that_are_not_a_page_are_refused() -> None:
    reader = OggReader()
    reader.push(page([b"h"], 0) + b"junk" * 10)
    assert reader.packets()
    with pytest.raises(DecodeError, match="not an Ogg page"):
        reader.has_page()


def test_a_packet_that_never_ends_is_refused() -> None:
    chunk = page([b"z" * 65025], -1, flags=1, tail=False)  # goes on and on
    reader = OggReader()
    reader.push(chunk * (MAX_PACKET // 65025 + 2))

    def read_on() -> None:
        while reader.has_page():
            reader.packets()

    with pytest.raises(DecodeError, match="packet over"):
        read_on()


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (bytes([0 << 3 | 0]), 480),  # SILK 10 ms, one frame
        (bytes([3 << 3 | 1]), 2 * 2880),  # SILK 60 ms, two frames
        (bytes([13 << 3 | 0]), 960),  # hybrid 20 ms
        (bytes([16 << 3 | 0]), 120),  # CELT 2.5 ms
        (bytes([31 << 3 | 2]), 2 * 960),  # CELT 20 ms, two frames of other sizes
        (bytes([31 << 3 | 3, 6]), 6 * 960),  # CELT 20 ms, six frames: 120 ms
        (bytes([31 << 3 | 3, 7]), 0),  # seven 20 ms frames: over 120 ms, invalid
        (bytes([31 << 3 | 3]), 0),  # code 3 without its frame count
        (b"", 0),
    ],
)
def test_opus_packet_durations_follow_the_toc(packet: bytes, samples: int) -> None:
    assert opus_samples(packet) == samples
