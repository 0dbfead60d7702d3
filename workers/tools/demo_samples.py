"""The demo's sample calls, spoken by espeak-ng and cached under ``.cache/demo``.

:func:`ensure_samples` returns the files (generating the missing ones): a mono
WAV, an OGG/Opus file (sent to the ``turns`` endpoint) and a stereo two-party
call (agent left, caller right, alternating lines). A file's name carries a
hash of its script, so changing a sentence regenerates only that file.
Raises :class:`~workers.errors.ConfigError` when espeak-ng is missing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from workers.errors import ConfigError
from workers.tools.plan import SendOptions

__all__ = ["Sample", "ensure_samples"]

RATE = 16000
PAUSE_S = 0.7
VERSION = 2

# Plain call-centre sentences in the espeak-ng voice the bundled models hear
# best; the emulator's own accuracy table (README) uses a harder, fixed set.
WAV_SCRIPT: tuple[str, ...] = (
    "I would like to check the status of my order.",
    "Please call me back tomorrow morning.",
    "The weather is nice today.",
)
OGG_SCRIPT: tuple[str, ...] = (
    "My internet connection is not working.",
    "Thank you very much.",
)
CALL_SCRIPT: tuple[tuple[str, str], ...] = (
    ("agent", "Can I have your account number please?"),
    ("caller", "Yes, it is one two three four."),
    ("agent", "Thank you. Your order will arrive on Monday."),
    ("caller", "That is great, thank you."),
)


@dataclass(frozen=True)
class Sample:
    """A file to send and how to send it."""

    name: str
    path: Path
    options: SendOptions
    script: tuple[str, ...]


def _digest(payload: object) -> str:
    raw = json.dumps([VERSION, payload], sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:10]


def _speak(text: str) -> bytes:
    from emulator.samples import SamplesError, speech

    try:
        return speech(text, RATE)  # the voice pocketsphinx hears best
    except SamplesError as exc:
        raise ConfigError(f"cannot generate the demo audio: {exc}") from exc


def _silence(seconds: float, channels: int = 1) -> bytes:
    return b"\x00\x00" * int(seconds * RATE) * channels


def _mono(script: Sequence[str]) -> bytes:
    parts = [_silence(0.3)]
    for line in script:
        parts += [_speak(line), _silence(PAUSE_S)]
    return b"".join(parts)


def _stereo(script: Sequence[tuple[str, str]]) -> bytes:
    """Interleaved 2-channel PCM: the agent speaks on the left, the caller on the right."""
    import numpy as np

    left, right = [_silence(0.3)], [_silence(0.3)]
    for who, line in script:
        voice = _speak(line)
        quiet = bytes(len(voice))
        left.append(voice if who == "agent" else quiet)
        right.append(quiet if who == "agent" else voice)
        left.append(_silence(PAUSE_S))
        right.append(_silence(PAUSE_S))
    lch = np.frombuffer(b"".join(left), dtype="<i2")
    rch = np.frombuffer(b"".join(right), dtype="<i2")
    return np.stack([lch, rch], axis=1).astype("<i2").tobytes()


def _write(path: Path, pcm: bytes, channels: int, fmt: str) -> None:
    from emulator.samples import encode

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(encode(pcm, RATE, channels, fmt))
    tmp.replace(path)  # never leave a half-written sample in the cache


def ensure_samples(folder: Path, sentences: int | None = None) -> tuple[list[Sample], bool]:
    """The demo's samples in ``folder`` and whether any had to be generated.

    ``sentences`` keeps only the first N lines of each script (shorter runs).
    """
    keep = slice(0, sentences)
    wav_script, ogg_script, call = WAV_SCRIPT[keep], OGG_SCRIPT[keep], CALL_SCRIPT[keep]
    folder.mkdir(parents=True, exist_ok=True)
    # No include_interim: the demo shows finals; interims are decoded anyway (the
    # emulator does not know who listens) but never delay a final (issue 14).
    specs = [
        ("order", f"order-{_digest(wav_script)}.wav", SendOptions()),
        ("support", f"support-{_digest(ogg_script)}.ogg", SendOptions(endpoint="turns")),
        (
            "call",
            f"call-{_digest(call)}.wav",
            SendOptions(split=True, labels=("agent", "caller")),
        ),
    ]
    generated = False
    samples = []
    for name, filename, opts in specs:
        path = folder / filename
        if not path.exists():
            generated = True
            _generate(name, path, wav_script, ogg_script, call)
        script = {"order": wav_script, "support": ogg_script}.get(name)
        lines = script if script is not None else tuple(line for _, line in call)
        samples.append(Sample(name, path, opts, lines))
    return samples, generated


def _generate(
    name: str,
    path: Path,
    wav_script: Sequence[str],
    ogg_script: Sequence[str],
    call: Sequence[tuple[str, str]],
) -> None:
    if name == "order":
        _write(path, _mono(wav_script), 1, "wav")
    elif name == "support":
        _write(path, _mono(ogg_script), 1, "ogg-opus")
    else:
        _write(path, _stereo(call), 2, "wav")
