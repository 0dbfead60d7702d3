"""Sans-I/O recognizers of the emulator: ``tones`` (deterministic) and ``pocketsphinx``.

Use :func:`create_recognizer`; the interface is in :mod:`emulator.recognizers.base`.
"""

from emulator.recognizers.base import (
    DEFAULT_UTTERANCE_END_MS,
    Final,
    Hypothesis,
    Interim,
    Recognizer,
    RecognizerEvent,
    SpeechStarted,
    Word,
    create_recognizer,
    language_codes,
)

__all__ = [
    "DEFAULT_UTTERANCE_END_MS",
    "Final",
    "Hypothesis",
    "Interim",
    "Recognizer",
    "RecognizerEvent",
    "SpeechStarted",
    "Word",
    "create_recognizer",
    "language_codes",
]
