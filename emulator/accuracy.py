"""Word accuracy of the real recognizers on a fixed espeak-ng set: ``python -m emulator.accuracy``.

Ten sentences, five voices, spoken by espeak-ng at 150 wpm and recognized
inline (the same cutting and decoding as a live connection, without the
pool). Accuracy is the share of reference words found in order in the
transcript (:func:`word_accuracy`, after :func:`normalize`: lower case, no
punctuation, single digits spelled out). Prints a Markdown table for the
README, plus the CPU seconds per second of audio of each recognizer.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import time
from collections.abc import Sequence

__all__ = ["SENTENCES", "VOICES", "main", "normalize", "word_accuracy"]

SENTENCES: tuple[str, ...] = (
    "I would like to check the status of my order.",
    "Please call me back tomorrow morning.",
    "Can I have your account number please?",
    "Yes, it is one two three four.",
    "My internet connection is not working.",
    "The package was delivered to the wrong address last week.",
    "Is there anything else I can help you with?",
    "Thank you very much for your patience.",
    "The meeting has been moved to Thursday afternoon.",
    "No, that is all. Goodbye.",
)
VOICES: tuple[str, ...] = ("en-us", "en-us+f2", "en-us+m3", "en-gb", "en-gb-scotland")
_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; a lone digit is spelled out."""
    words = _NOT_WORD.sub(" ", text.lower()).split()
    return [_DIGITS[int(w)] if len(w) == 1 and w.isdigit() else w for w in words]


def word_accuracy(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(right, total)``: reference words matched in order in the hypothesis."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    matcher = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()), len(ref)


def measure(name: str, voices: Sequence[str], sentences: Sequence[str]) -> dict[str, float]:
    """Accuracy per voice (and ``"cpu"``: CPU s per audio s) of recognizer ``name``."""
    from emulator.recognizers import Final, create_recognizer
    from emulator.samples import speech

    recognizer = create_recognizer(name, inline=True)
    silence = b"\0" * 32 * 600
    out: dict[str, float] = {}
    cpu = audio = 0.0
    for voice in voices:
        right = total = 0
        for sentence in sentences:
            pcm = silence + speech(sentence, voice=voice) + silence
            started = time.process_time()
            events = recognizer.feed(pcm) + recognizer.flush()
            cpu += time.process_time() - started
            audio += len(pcm) / 32000
            text = " ".join(e.hypothesis.text for e in events if isinstance(e, Final))
            got, count = word_accuracy(sentence, text)
            right, total = right + got, total + count
        out[voice] = right / total
    out["cpu"] = cpu / audio
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; ``--recognizer`` repeats (default: whisper and pocketsphinx)."""
    parser = argparse.ArgumentParser(prog="python -m emulator.accuracy", description=__doc__)
    parser.add_argument("--recognizer", action="append", choices=("whisper", "pocketsphinx"))
    args = parser.parse_args(argv)
    names = args.recognizer or ["whisper", "pocketsphinx"]
    print("| recognizer | " + " | ".join(VOICES) + " | all | CPU s per audio s |")
    print("|---" * (len(VOICES) + 3) + "|")
    for name in names:
        scores = measure(name, VOICES, SENTENCES)
        mean = sum(scores[v] for v in VOICES) / len(VOICES)
        cells = " | ".join(f"{scores[v]:.0%}" for v in VOICES)
        print(f"| {name} | {cells} | {mean:.0%} | {scores['cpu']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
