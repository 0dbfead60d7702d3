"""A local Reson8-compatible streaming speech-to-text server (realtime + turns)."""
