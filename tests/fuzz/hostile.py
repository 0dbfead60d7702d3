"""Hostile inputs: the catalogue the fuzz corpus starts with and the
whole-process hostile-input test sends (issue 12 lists how each was seen).

Each :class:`Hostile` is one record's value and headers, with the dead-letter
code the worker must give it. Nothing here does I/O.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Hostile:
    name: str
    value: bytes
    headers: Headers = ()
    code: str = "undecodable_audio"
    key: bytes | None = b""  # b"": the caller picks a unique session id


def wav(
    *,
    fmt_tag: int = 1,
    channels: int = 1,
    rate: int = 16000,
    block_align: int | None = None,
    bits: int = 16,
    data: bytes = b"",
    data_size: int | None = None,
) -> bytes:
    """A WAV file with any header values, sane or not."""
    align = channels * bits // 8 if block_align is None else block_align
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * max(align, 0), align, bits)
    size = len(data) if data_size is None else data_size
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + data
    )


def ogg_page(body: bytes, *, granule: int = 0, flags: int = 2, serial: int = 1) -> bytes:
    """One OGG page (CRC left 0: demuxers that check it reject the page)."""
    segments = [255] * (len(body) // 255) + [len(body) % 255]
    header = b"OggS" + bytes([0, flags]) + struct.pack("<qIII", granule, serial, 0, 0)
    return header + bytes([len(segments)]) + bytes(segments) + body


def opus_head(channels: int) -> bytes:
    return b"OpusHead" + bytes([1, channels]) + struct.pack("<HIhB", 312, 48000, 0, 0)


# The 44-byte WAV of issue 12 (block size 0): made the restart scanner loop forever.
ZERO_BLOCK_WAV = bytes.fromhex(
    "524946462400000057415645666d74201000000001000000803e000000000000000010006461746100000000"
)
# The 29-byte OGG page of issue 12 (no Opus/Vorbis header, granule != 0): ZeroDivisionError.
BARE_OGG_PAGE = bytes.fromhex("4f67675300000100000000000000010000000000000000000000010178")


def catalogue(seed: int = 12) -> list[Hostile]:
    """Every hostile input kind, one each (the fuzz corpus' seeds)."""
    rng = random.Random(seed)
    noise = bytes(rng.getrandbits(8) for _ in range(4000))
    return [
        Hostile("wav-zero-block", ZERO_BLOCK_WAV),
        Hostile("wav-zero-channels", wav(channels=0, block_align=2, data=noise[:400])),
        Hostile("wav-zero-rate", wav(rate=0, data=noise[:400])),
        Hostile("wav-1hz", wav(rate=1, bits=8, channels=1, data=noise[:2048] * 4)),
        Hostile("wav-65535-channels", wav(channels=65535, block_align=2, data=noise[:400])),
        Hostile("wav-unknown-codec", wav(fmt_tag=0x7777, data=noise[:800])),
        Hostile("wav-header-cut", wav(data=noise[:100])[:30]),
        Hostile("ogg-bare-page", BARE_OGG_PAGE),
        Hostile("ogg-junk", b"OggS" + noise[:600]),
        Hostile(
            "ogg-opushead-0-channels", ogg_page(opus_head(0)) + ogg_page(b"x" * 50, granule=960)
        ),
        Hostile("ogg-header-cut", ogg_page(opus_head(1))[:20]),
        Hostile("random-short", noise[:7]),
        Hostile("random-long", noise),
        Hostile("mp3-junk", b"\xff\xfb\x90\x64" + noise[:1500]),
        Hostile("flac-junk", b"fLaC" + noise[:900]),
        Hostile("webm-junk", b"\x1a\x45\xdf\xa3" + noise[:900]),
        Hostile("mp4-junk", b"\x00\x00\x00\x18ftypisom" + noise[:900]),
        Hostile("bad-kind", b"\x00" * 320, (("stt-kind", b"pause"),), "bad_header"),
        Hostile("bad-encoding", b"\x00" * 320, (("stt-encoding", b"mp4"),), "bad_header"),
        Hostile("bad-rate", b"\x00" * 320, (("stt-sample-rate", b"-1"),), "bad_header"),
        Hostile("huge-rate", b"\x00" * 320, (("stt-sample-rate", b"9" * 40),), "bad_header"),
        Hostile("bad-channels", b"\x00" * 320, (("stt-channels", b"65535"),), "bad_header"),
        Hostile("non-ascii-header", b"\x00" * 320, (("stt-language", "é".encode()),), "bad_header"),
        Hostile("bad-language", b"\x00" * 320, (("stt-language", b"xx,yy"),), "bad_header"),
        Hostile("bad-option", b"\x00" * 320, (("stt-options", b"drop_tables"),), "bad_header"),
        Hostile("no-key", b"\x00" * 320, (), "missing_key", None),
        Hostile("bad-key", b"\x00" * 320, (), "bad_key", b"\xff\xfe\xfd"),
    ]
