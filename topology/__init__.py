"""Kafka topology: topic specs, ``topics apply``, and the local single-node broker."""
