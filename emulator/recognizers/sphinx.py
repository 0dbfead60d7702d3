"""The ``pocketsphinx`` recognizer: real English ASR for demos and smoke tests.

PocketSphinx 5 with the US English model shipped inside its wheel (nothing is
downloaded). A :class:`pocketsphinx.Endpointer` (WebRTC-style VAD, window =
``utterance_end_ms``) cuts utterances. Each utterance's audio is kept and
decoded as a whole (``full_utt``): once for the Final, and on a growing prefix
for each Interim (after ``interim_ms``, then each time the utterance has
doubled), so the decoding cost stays within ~3 passes over the audio.

Why not PocketSphinx's incremental (live) decoding: on espeak-ng English it
got ~35-45% of the words where whole-utterance decoding got ~75-80%, and a
live pass leaves the decoder's cepstral-mean state worse for any re-decode.

Output is *not* split-independent to the sample (the VAD works on 30 ms frames
counted from the first sample fed) and not meant for exact assertions; use the
``tones`` recognizer for those. Cost: ~0.5 s and ~30 MB to load the model per
instance, decoding roughly 0.2-0.4x real time on one core.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from pocketsphinx import Decoder, Endpointer, Vad

from emulator.frames import FrameAligner
from emulator.recognizers.base import (
    DEFAULT_UTTERANCE_END_MS,
    Final,
    Hypothesis,
    Interim,
    RecognizerEvent,
    SpeechStarted,
    Word,
    language_codes,
)

__all__ = ["SphinxRecognizer"]

SAMPLE_RATE = 16000  # the wheel's en-us acoustic model is 16 kHz
_BYTES_PER_MS = 2 * SAMPLE_RATE // 1000
_FRAME_MS = 10  # decoder frame rate: 100 frames/s (pocketsphinx default -frate)
_ALTERNATE = re.compile(r"\(\d+\)$")  # "read(2)": the 2nd pronunciation of "read"


def _is_filler(word: str) -> bool:
    """``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``, ``++NOISE++`` and the like."""
    return word.startswith(("<", "[", "+"))


class SphinxRecognizer:
    """Sans-I/O English recognizer; one instance (and one decoder) per connection.

    Feed 16 kHz mono ``pcm_s16le``; render the returned events in order; call
    :meth:`flush` when the client asks to finalize. ``language`` must be unset
    or include ``"en"`` (the only model), else ``ValueError``: refuse the
    connection. ``vad_mode`` is 0 (loose) .. 3 (strict). An utterance longer
    than ``max_utterance_ms`` is finalized there and speech goes on in a new one.
    """

    def __init__(
        self,
        *,
        sample_rate: int = SAMPLE_RATE,
        language: str | Sequence[str] | None = None,
        utterance_end_ms: int = DEFAULT_UTTERANCE_END_MS,
        interim_ms: int = 300,
        vad_mode: int = 0,
        max_utterance_ms: int = 30_000,
    ) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"pocketsphinx needs {SAMPLE_RATE} Hz audio, not {sample_rate}")
        codes = language_codes(language)
        if codes and "en" not in codes:
            raise ValueError(f"pocketsphinx only has an English model, not {','.join(codes)}")
        self.sample_rate = sample_rate
        self.language = "en"
        self._window = utterance_end_ms / 1000
        self._vad_mode = vad_mode
        self._interim_bytes = interim_ms * _BYTES_PER_MS
        self._max_bytes = max_utterance_ms * _BYTES_PER_MS
        self._decoder = Decoder(samprate=sample_rate, logfn="/dev/null")
        self._endpointer = self._new_endpointer()
        self._vad = Vad(mode=vad_mode, sample_rate=sample_rate)
        self._frame_bytes: int = self._endpointer.frame_bytes
        self._frames = FrameAligner(self._frame_bytes)
        self._consumed = 0  # bytes given to the endpointer
        self._base_ms = 0  # stream position where the current endpointer started
        self._last_voiced_end = 0  # bytes position after the last VAD speech frame
        self._utt_start_ms: int | None = None  # an utterance is being collected since then
        self._utt_audio: list[bytes] = []
        self._utt_bytes = 0
        self._next_interim = 0  # utterance bytes at which to decode the next Interim
        self._last: Hypothesis | None = None  # the last Interim sent
        self._in_utterance = False

    @property
    def position_ms(self) -> int:
        """Audio consumed so far (whole 30 ms VAD frames; a partial frame waits)."""
        return self._consumed // _BYTES_PER_MS

    @property
    def trailing_silence_ms(self) -> int:
        """Non-speech (per VAD frame) since the last speech frame, in ms."""
        return (self._consumed - self._last_voiced_end) // _BYTES_PER_MS

    @property
    def in_utterance(self) -> bool:
        """True between a SpeechStarted and its Final."""
        return self._in_utterance

    def feed(self, pcm: bytes) -> list[RecognizerEvent]:
        """Recognize ``pcm`` (any length); return the events it completed."""
        data = self._frames.take(pcm)
        events: list[RecognizerEvent] = []
        for offset in range(0, len(data), self._frame_bytes):
            events += self._frame(data[offset : offset + self._frame_bytes])
        return events

    def flush(self) -> list[RecognizerEvent]:
        """Finalize the utterance in progress (Final if it has words); keep feeding after.

        The endpointer's look-ahead and a buffered partial frame are decoded
        too; the endpointer then starts afresh at the current position.
        """
        if self._utt_start_ms is None:
            return []
        held = self._frames.drain()
        tail = held[: len(held) & ~1] or b"\0\0"  # end_stream needs >= 1 sample
        self._consumed += len(held)
        speech = self._endpointer.end_stream(tail)
        if speech is not None:
            self._collect(speech)
        self._endpointer = self._new_endpointer()
        self._base_ms = self.position_ms
        return self._end_utterance()

    def _new_endpointer(self) -> Endpointer:
        return Endpointer(window=self._window, vad_mode=self._vad_mode, sample_rate=SAMPLE_RATE)

    def _frame(self, frame: bytes) -> list[RecognizerEvent]:
        self._consumed += len(frame)
        if self._vad.is_speech(frame):
            self._last_voiced_end = self._consumed
        speech = self._endpointer.process(frame)
        if speech is None:
            return []
        if self._utt_start_ms is None:
            self._start_utterance(self._base_ms + round(self._endpointer.speech_start * 1000))
        self._collect(speech)
        if not self._endpointer.in_speech:
            return self._end_utterance()
        if self._utt_bytes >= self._max_bytes:
            return self._split_utterance()
        return self._interim()

    def _split_utterance(self) -> list[RecognizerEvent]:
        """Finalize an over-long utterance; speech goes on in a new one from here."""
        next_start = (self._utt_start_ms or 0) + self._utt_bytes // _BYTES_PER_MS
        events = self._end_utterance()
        self._start_utterance(next_start)
        return events

    def _start_utterance(self, start_ms: int) -> None:
        self._utt_start_ms = start_ms
        self._utt_audio, self._utt_bytes = [], 0
        self._next_interim = self._interim_bytes

    def _collect(self, speech: bytes) -> None:
        self._utt_audio.append(speech)
        self._utt_bytes += len(speech)

    def _interim(self) -> list[RecognizerEvent]:
        """SpeechStarted once words appear, then an Interim whenever the words change."""
        if self._utt_bytes < self._next_interim:
            return []
        self._next_interim = max(self._utt_bytes + self._interim_bytes, 2 * self._utt_bytes)
        words = self._decode()
        if not words:
            return []
        hypothesis = Hypothesis.of(words, self.language)
        events = self._speech_started()
        if self._last is None or hypothesis.words != self._last.words:
            self._last = hypothesis
            events.append(Interim(hypothesis))
        return events

    def _speech_started(self) -> list[RecognizerEvent]:
        if self._in_utterance or self._utt_start_ms is None:
            return []
        self._in_utterance = True
        return [SpeechStarted(self._utt_start_ms)]

    def _end_utterance(self) -> list[RecognizerEvent]:
        """Decode the whole utterance; a Final if it (or its last Interim) has words."""
        words = self._decode()
        # A SpeechStarted promised a Final: if the full decode drops every word,
        # settle on the last Interim rather than leave the utterance open.
        hypothesis = Hypothesis.of(words, self.language) if words else self._last
        events = self._speech_started() if hypothesis else []
        if hypothesis is not None:
            events.append(Final(hypothesis))
        self._utt_start_ms, self._last, self._in_utterance = None, None, False
        self._utt_audio, self._utt_bytes = [], 0
        return events

    def _decode(self) -> list[Word]:
        """Decode the utterance so far as one whole utterance; its words."""
        audio = b"".join(self._utt_audio)
        self._utt_audio = [audio]
        self._decoder.start_utt()
        self._decoder.process_raw(audio, full_utt=True)
        self._decoder.end_utt()
        return list(self._words())

    def _words(self) -> Iterator[Word]:
        """The decoder's segmentation as Words (fillers dropped, ``(2)`` stripped)."""
        start_ms = self._utt_start_ms or 0
        for segment in self._decoder.seg():
            if _is_filler(segment.word):
                continue
            frames = segment.end_frame - segment.start_frame + 1
            yield Word(
                text=_ALTERNATE.sub("", segment.word),
                start_ms=start_ms + segment.start_frame * _FRAME_MS,
                duration_ms=frames * _FRAME_MS,
                confidence=min(1.0, max(0.01, round(float(segment.prob), 2))),
            )
