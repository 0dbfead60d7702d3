"""reson8-kafka worker: Faust agents that turn audio chunks on Kafka into transcripts.

This package is kept import-light: importing ``workers`` loads nothing heavy;
the Faust app lives in :mod:`workers.app` and is only imported by the
``worker`` command.
"""

__version__ = "0.1.0"
