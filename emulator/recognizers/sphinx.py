"""The ``pocketsphinx`` engine: real English ASR from the model inside its wheel.

PocketSphinx 5 with the US English model shipped in the wheel (nothing is
downloaded). Each job is decoded as one whole utterance (``full_utt``):
on espeak-ng English that got ~75-80% of the words where PocketSphinx's live
(incremental) decoding got ~35-45%. Utterances are cut by
:class:`emulator.recognizers.segmenter.SegmentingRecognizer`; this module only
turns audio into words. Load: ~0.5 s and ~30 MB once per worker process;
decoding roughly 0.2-0.4x real time on one core.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pocketsphinx import Decoder

from emulator.recognizers.base import DecodeJob, Word

__all__ = ["SphinxEngine"]

SAMPLE_RATE = 16000  # the wheel's en-us acoustic model is 16 kHz
_FRAME_MS = 10  # decoder frame rate: 100 frames/s (pocketsphinx default -frate)
_ALTERNATE = re.compile(r"\(\d+\)$")  # "read(2)": the 2nd pronunciation of "read"


def _is_filler(word: str) -> bool:
    """``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``, ``++NOISE++`` and the like."""
    return word.startswith(("<", "[", "+"))


class SphinxEngine:
    """One pocketsphinx decoder; :meth:`decode` transcribes one job at a time."""

    def __init__(self) -> None:
        self._decoder = Decoder(samprate=SAMPLE_RATE, logfn="/dev/null")

    def decode(self, job: DecodeJob) -> list[Word]:
        """The words of ``job.audio`` (fillers dropped), times from the stream start."""
        self._decoder.start_utt()
        self._decoder.process_raw(job.audio, full_utt=True)
        self._decoder.end_utt()
        return list(self._words(job.offset_ms))

    def _words(self, offset_ms: int) -> Iterator[Word]:
        for segment in self._decoder.seg():
            if _is_filler(segment.word):
                continue
            frames = segment.end_frame - segment.start_frame + 1
            yield Word(
                text=_ALTERNATE.sub("", segment.word),
                start_ms=offset_ms + segment.start_frame * _FRAME_MS,
                duration_ms=frames * _FRAME_MS,
                confidence=min(1.0, max(0.01, round(float(segment.prob), 2))),
            )
