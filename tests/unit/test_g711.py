"""G.711 expansion tables against values from ITU-T G.711 (no I/O)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from workers.transcode import alaw_to_s16, mulaw_to_s16


def _decode(fn: Callable[[bytes], bytes], codes: list[int]) -> list[int]:
    return [int(v) for v in np.frombuffer(fn(bytes(codes)), dtype="<i2")]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xEF, 132)],
)
def test_mulaw_known_values(code: int, value: int) -> None:
    assert _decode(mulaw_to_s16, [code]) == [value]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264)],
)
def test_alaw_known_values(code: int, value: int) -> None:
    assert _decode(alaw_to_s16, [code]) == [value]


@pytest.mark.parametrize("fn", [mulaw_to_s16, alaw_to_s16])
def test_tables_are_odd_symmetric_and_monotonic(fn: Callable[[bytes], bytes]) -> None:
    values = np.array(_decode(fn, list(range(256))))
    positive = np.sort(values[values > 0])
    negative = np.sort(-values[values < 0])
    assert positive.tolist() == negative.tolist()
    assert len(set(positive.tolist())) == len(positive)  # 127/128 distinct magnitudes


def test_output_is_two_bytes_per_code() -> None:
    assert len(mulaw_to_s16(b"\x00\x01\x02")) == 6
    assert alaw_to_s16(b"") == b""
