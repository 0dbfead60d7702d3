"""RawDecoder: remainders across odd splits, passthrough counting (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.errors import DecodeError
from workers.transcode import RawDecoder, mulaw_to_s16


def _feed_split(decoder: RawDecoder, data: bytes, cuts: list[int]) -> bytes:
    out, start = [], 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        out.append(decoder.feed(data[start:cut] if cut >= start else b""))
        start = max(start, cut)
    return b"".join(out)


@given(
    data=st.binary(min_size=0, max_size=400),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    encoding=st.sampled_from(["pcm_s16le", "mulaw", "alaw"]),
    channels=st.integers(min_value=1, max_value=3),
)
def test_any_split_gives_the_whole_stream_result(
    data: bytes, cuts: list[int], encoding: str, channels: int
) -> None:
    whole = RawDecoder(encoding, 8000, channels).feed(data)
    split_decoder = RawDecoder(encoding, 8000, channels)
    assert _feed_split(split_decoder, data, cuts) == whole
    assert split_decoder.samples_out == len(data) // split_decoder.frame_bytes


def test_partial_frame_is_kept_for_the_next_feed() -> None:
    decoder = RawDecoder("pcm_s16le", 16000, 2)
    assert decoder.feed(b"\x01\x00\x02") == b""
    assert decoder.pending == 3
    assert decoder.feed(b"\x00\x05") == b"\x01\x00\x02\x00"
    assert decoder.pending == 1
    assert decoder.samples_out == 1


def test_mulaw_is_expanded_and_passthrough_is_not() -> None:
    decoder = RawDecoder("mulaw", 8000, 1)
    assert decoder.feed(b"\x00\xff") == mulaw_to_s16(b"\x00\xff")
    assert decoder.passthrough(b"\x80") == b"\x80"
    assert decoder.samples_out == 3


def test_flush_mid_frame_raises_decode_error() -> None:
    decoder = RawDecoder("pcm_s16le", 16000, 1)
    decoder.feed(b"\x01")
    with pytest.raises(DecodeError, match="mid-frame"):
        decoder.flush()
    assert decoder.flush() == b""


def test_rejects_unknown_encoding() -> None:
    with pytest.raises(ValueError, match="encoding"):
        RawDecoder("opus", 48000, 1)
