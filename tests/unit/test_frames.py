"""FrameAligner: whole frames out, whatever the split (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.frames import FrameAligner


@given(st.binary(max_size=200), st.lists(st.integers(0, 50), max_size=20), st.integers(1, 6))
def test_any_split_gives_the_same_whole_frames(data: bytes, cuts: list[int], width: int) -> None:
    aligner = FrameAligner(width)
    out, start = b"", 0
    for cut in sorted(cuts):
        out += aligner.take(data[start:cut])
        start = max(start, cut)
    out += aligner.take(data[start:])
    whole = len(data) - len(data) % width
    assert out == data[:whole]
    assert aligner.held == data[whole:]
    assert aligner.drain() == data[whole:]
    assert aligner.held == b""


def test_frame_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FrameAligner(0)
