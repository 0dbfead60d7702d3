"""``POST /v1/speech-to-text/prerecorded``: a whole file in, one JSON transcript out.

:func:`transcribe` is a plain function (no sockets, no event loop) so the
server can run it in a decode worker process: decode the body
(:func:`emulator.audio.decode_file`), cut and decode it with the connection
recognizers' own code (inline engine), and render the answer with
:func:`render` under the request's flags (Reson8 docs, prerecorded page):

``{"text", "start_ms"?, "duration_ms"?, "words"?, "language"?, "segments"?}``
with ``start_ms``/``duration_ms`` under ``include_timestamps`` (on the answer
and on each word), ``words`` under ``include_words`` (``confidence`` under
``include_confidence``), ``language`` under ``include_language``, and with
``diarize`` one segment per utterance, all ``speaker_id`` 0 (one speaker).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from emulator.audio import decode_file
from emulator.recognizers import Final, Hypothesis, create_recognizer
from schemas.wire import PrerecordedParams

__all__ = ["render", "transcribe"]

_CHUNK = 32000  # 1 s of 16 kHz s16: the recognizer cuts utterances the same way as live


def transcribe(recognizer: str, body: bytes, query: dict[str, str], utterance_end_ms: int) -> str:
    """The JSON answer for ``body``; raises :class:`~emulator.errors.DecodeError` (400).

    ``query`` must already have passed :meth:`PrerecordedParams.from_query`.
    """
    params = PrerecordedParams.from_query(query)
    pcm = decode_file(body, params.encoding, params.sample_rate, params.channels)
    language = params.language or None
    engine = create_recognizer(
        recognizer, language=language, inline=True, utterance_end_ms=utterance_end_ms
    )
    events = [e for i in range(0, len(pcm), _CHUNK) for e in engine.feed(pcm[i : i + _CHUNK])]
    events += engine.flush()
    finals = [e.hypothesis for e in events if isinstance(e, Final)]
    fallback = params.language[0] if params.language else "en"
    return json.dumps(render(finals, params, fallback), separators=(",", ":"))


def render(
    finals: Sequence[Hypothesis], params: PrerecordedParams, language: str
) -> dict[str, Any]:
    """The answer for ``finals`` (in order) under the flags of ``params``."""
    out: dict[str, Any] = _piece(finals, params)
    if params.include_language:
        out["language"] = finals[0].language if finals else language
    if params.diarize:
        out["segments"] = [
            {**_piece([h], params), "speaker_id": 0, **_language(h, params)} for h in finals
        ]
    return out


def _piece(finals: Sequence[Hypothesis], params: PrerecordedParams) -> dict[str, Any]:
    out: dict[str, Any] = {"text": " ".join(h.text for h in finals)}
    if params.include_timestamps and finals:
        start = finals[0].start_ms
        end = max(h.start_ms + h.duration_ms for h in finals)
        out.update(start_ms=start, duration_ms=end - start)
    if params.include_words:
        out["words"] = [_word(w, params) for h in finals for w in h.words]
    return out


def _word(word: Any, params: PrerecordedParams) -> dict[str, Any]:
    out: dict[str, Any] = {"text": word.text}
    if params.include_timestamps:
        out.update(start_ms=word.start_ms, duration_ms=word.duration_ms)
    if params.include_confidence:
        out["confidence"] = word.confidence
    return out


def _language(hypothesis: Hypothesis, params: PrerecordedParams) -> dict[str, str]:
    return {"language": hypothesis.language} if params.include_language else {}
