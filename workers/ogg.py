"""Ogg pages into packets, and Opus packet durations (RFC 3533, RFC 6716).

What the threadless Opus path of ``workers.transcode`` reads instead of
FFmpeg's Ogg demuxer: the bytes of one logical stream, split anywhere, come
out as whole packets with the page they ended on. Untrusted bytes: the work
is linear in the input, a page is at most 65,307 bytes, a packet that never
ends is refused past :data:`MAX_PACKET`, and anything that is not an Ogg
page where one must start raises :class:`~workers.errors.DecodeError`
(tests/fuzz has the target).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from workers.errors import DecodeError

__all__ = ["MAX_PACKET", "OggPacket", "OggReader", "opus_samples", "page_size"]

MAX_PACKET = 1 << 20  # no Opus or header packet comes near a mebibyte
_PAGE_HEADER = 27
_CONTINUED, _BOS, _EOS = 1, 2, 4


@dataclass(frozen=True, slots=True)
class OggPacket:
    """One packet of the stream, with the page it ended on."""

    data: bytes
    granule: int  # of the page the packet ended on (-1: no packet ended there before)
    last_on_page: bool  # the page's granule counts up to the end of this packet
    eos: bool  # that page ends the logical stream
    bos: bool = False  # that page begins a logical stream (a chained one, after the first)


class OggReader:
    """Push bytes in any split; take the complete packets of one logical
    stream at a time: the first, then each stream chained after it (a page
    that begins a stream replaces the one read so far, as FFmpeg's demuxer
    does with a single stream). Pages of other streams are skipped."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._partial = bytearray()  # a packet continued on the next page
        self._serial: int | None = None
        self.consumed = 0  # bytes of whole pages read
        self.ended = False  # the end-of-stream page was read

    @property
    def pending(self) -> int:
        """Bytes held that do not make a whole page yet."""
        return len(self._buf)

    def push(self, data: bytes) -> None:
        self._buf += data

    def packets(self) -> list[OggPacket]:
        """The packets of the next whole page (possibly none: a page that only
        continues a packet, or another stream's page); [] also when no whole
        page is buffered (see :meth:`has_page`)."""
        page = self._take_page()
        if page is None:
            return []
        flags, granule, serial, lacing, body = page
        begins = self._serial is None or (bool(flags & _BOS) and serial != self._serial)
        if begins:  # the first stream, or one chained after it
            self._serial, self.ended = serial, False
            self._partial.clear()
        if serial != self._serial or self.ended:
            return []
        if not flags & _CONTINUED:
            self._partial.clear()  # a packet cut off by a lost page is dropped, as FFmpeg does
        ended = [i for i, size in enumerate(lacing) if size < 255]
        eos = bool(flags & _EOS)
        out, at = [], 0
        for i, size in enumerate(lacing):
            self._partial += body[at : at + size]
            at += size
            if len(self._partial) > MAX_PACKET:
                raise DecodeError(f"Ogg packet over {MAX_PACKET} bytes")
            if size < 255:
                last = i == ended[-1]
                out.append(OggPacket(bytes(self._partial), granule, last, eos, begins))
                self._partial.clear()
        self.ended = eos
        return out

    def has_page(self) -> bool:
        """A whole page is buffered."""
        return page_size(self._buf) is not None

    def _take_page(self) -> tuple[int, int, int, bytes, bytes] | None:
        size = page_size(self._buf)
        if size is None:
            return None
        buf = self._buf
        flags = buf[5]
        granule, serial = struct.unpack_from("<qI", buf, 6)
        segments = buf[26]
        lacing = bytes(buf[_PAGE_HEADER : _PAGE_HEADER + segments])
        body = bytes(buf[_PAGE_HEADER + segments : size])
        del buf[:size]
        self.consumed += size
        return flags, granule, serial, lacing, body


def page_size(buf: bytes | bytearray) -> int | None:
    """Size of the Ogg page that ``buf`` starts with, or None while it is not
    whole; raises :class:`DecodeError` when ``buf`` does not start with one."""
    if len(buf) < _PAGE_HEADER:
        return None
    if buf[:4] != b"OggS" or buf[4] != 0:
        raise DecodeError("not an Ogg page where one must start")
    segments = buf[26]
    if len(buf) < _PAGE_HEADER + segments:
        return None
    size = _PAGE_HEADER + segments + sum(buf[_PAGE_HEADER : _PAGE_HEADER + segments])
    return size if len(buf) >= size else None


# Opus frame sizes at 48 kHz by TOC configuration (RFC 6716, section 3.1):
# SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
_FRAME_SAMPLES = (
    *(480, 960, 1920, 2880) * 3,
    *(480, 960) * 2,
    *(120, 240, 480, 960) * 4,
)


def opus_samples(packet: bytes) -> int:
    """Samples at 48 kHz that an Opus packet decodes to (0 for an empty or
    malformed one, which decoders conceal or drop)."""
    if not packet:
        return 0
    toc = packet[0]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    elif len(packet) < 2:
        return 0
    else:
        frames = packet[1] & 0x3F
    samples = frames * _FRAME_SAMPLES[toc >> 3]
    return samples if samples <= 5760 else 0  # more than 120 ms is invalid
