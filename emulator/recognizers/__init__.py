"""Sans-I/O recognizers of the emulator: ``tones`` (exact), ``pocketsphinx``, ``whisper``.

Use :func:`create_recognizer`; the interface is in :mod:`emulator.recognizers.base`.
"""

from emulator.recognizers.base import (
    DEFAULT_UTTERANCE_END_MS,
    Decode,
    DecodeJob,
    Engine,
    Final,
    Hypothesis,
    Interim,
    Marked,
    Recognizer,
    RecognizerEvent,
    SpeechStarted,
    Word,
    create_recognizer,
    language_codes,
)

__all__ = [
    "DEFAULT_UTTERANCE_END_MS",
    "Decode",
    "DecodeJob",
    "Engine",
    "Final",
    "Hypothesis",
    "Interim",
    "Marked",
    "Recognizer",
    "RecognizerEvent",
    "SpeechStarted",
    "Word",
    "create_recognizer",
    "language_codes",
]
