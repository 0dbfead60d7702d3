"""Engines by name, one of each per process; :func:`run_job` is what a pool runs.

Engines are loaded on first use and kept for the life of the process (a
worker process of :mod:`emulator.recognizers.pool`, or the test process).
"""

from __future__ import annotations

from emulator.errors import ConfigError
from emulator.recognizers.base import DecodeJob, Engine, Word

__all__ = ["ENGINES", "load_engine", "run_job"]

ENGINES = ("pocketsphinx", "whisper")
_LOADED: dict[str, Engine] = {}


def load_engine(name: str) -> Engine:
    """This process's engine ``name``; raises :class:`ConfigError` for an unknown one."""
    engine = _LOADED.get(name)
    if engine is None:
        engine = _LOADED[name] = _create(name)
    return engine


def _create(name: str) -> Engine:
    if name == "pocketsphinx":
        from emulator.recognizers.sphinx import SphinxEngine

        return SphinxEngine()
    if name == "whisper":
        from emulator.recognizers.whisper import WhisperEngine

        return WhisperEngine()
    raise ConfigError(f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")


def run_job(job: DecodeJob) -> list[Word]:
    """Decode ``job`` here; a job nobody wants any more (``wanted`` False) costs nothing."""
    if not job.wanted:
        return []
    return load_engine(job.engine).decode(job)
