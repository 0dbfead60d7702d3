"""Pydantic v2 models shared by the worker, the emulator and the tools.

- :mod:`schemas.wire`: Reson8 WebSocket protocol (query parameters, client and
  server messages, refusal bodies).
- :mod:`schemas.events`: output events of the worker (transcripts, turns,
  session lifecycle) and the input envelope.
"""
