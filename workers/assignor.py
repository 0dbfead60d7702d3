"""The consumer group's partition assignor: balanced and sticky.

Faust (without tables) assigns round robin, which reshuffles most partitions
at every membership change; aiokafka's sticky assignor keeps its state in
class attributes and never learns the generation (aiokafka issues 1175 and
1176). This one is small and pure:

- Every member reports the partitions it owns and the generation of that
  assignment (the metadata's ``user_data``, JSON). The leader numbers each
  assignment it makes one past the highest generation any member reports.
- Per topic, among the members subscribed to it: each member is given
  ``n // m`` partitions, and ``n % m`` members one more (those that own the
  most, so that fewer partitions move). A member keeps what it owns up to its
  share; the rest, and what nobody owns, go to the members short of theirs.
- A partition two members claim goes to the newer claim (a member that was
  away reports a stale assignment); claims that tie, or that name partitions
  the topic does not have, count for nothing.

With the registry holding sessions across a rebalance (workers/registry.py),
the sessions of every partition that stays where it was keep their upstream
connections. The Kafka protocol is still eager: every member revokes
everything at the start of a rebalance and gets its assignment at the end.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

NAME = "reson8-sticky"
MAX_USER_DATA = 65536  # a member's report is our own; anything larger is not


def balanced(partitions: Iterable[int], owned: Mapping[str, Iterable[int]]) -> dict[str, list[int]]:
    """Assign ``partitions`` to the members of ``owned`` (member -> what it owns
    now): balanced to within one, keeping each member's own up to its share."""
    everything = sorted(set(partitions))
    members = sorted(owned)
    if not members:
        return {}
    valid = set(everything)
    have = {m: sorted(set(owned[m]) & valid) for m in members}
    base, extra = divmod(len(everything), len(members))
    by_holding = sorted(members, key=lambda m: (-len(have[m]), m))
    share = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_holding)}
    result = {m: have[m][: share[m]] for m in members}
    taken = {p for kept in result.values() for p in kept}
    for partition in (p for p in everything if p not in taken):
        short = min(members, key=lambda m: (len(result[m]) - share[m], m))
        result[short].append(partition)
    return {m: sorted(ps) for m, ps in result.items()}


def resolve_claims(
    claims: Mapping[str, tuple[int, Iterable[int]]],
) -> dict[str, list[int]]:
    """``member -> (generation, partitions claimed)`` to what each one really
    owns: a partition claimed twice goes to the newer claim, to nobody on a tie."""
    best: dict[int, tuple[int, list[str]]] = {}
    for member, (generation, partitions) in claims.items():
        for partition in set(partitions):
            current = best.get(partition)
            if current is None or generation > current[0]:
                best[partition] = (generation, [member])
            elif generation == current[0]:
                current[1].append(member)
    owned: dict[str, list[int]] = {m: [] for m in claims}
    for partition, (_, holders) in best.items():
        if len(holders) == 1:
            owned[holders[0]].append(partition)
    return owned


def encode_state(generation: int, partitions: Iterable[TopicPartition]) -> bytes:
    owned: dict[str, list[int]] = defaultdict(list)
    for tp in partitions:
        owned[tp.topic].append(tp.partition)
    return json.dumps({"generation": generation, "owned": owned}, sort_keys=True).encode()


def decode_state(user_data: bytes | None) -> tuple[int, dict[str, list[int]]]:
    """A member's report; anything malformed reports nothing (generation -1)."""
    if not user_data or len(user_data) > MAX_USER_DATA:
        return -1, {}
    try:
        state = json.loads(user_data)
        generation = state["generation"]
        owned = state["owned"]
        if not isinstance(generation, int) or not isinstance(owned, dict):
            return -1, {}
        clean = {
            topic: [p for p in partitions if isinstance(p, int) and not isinstance(p, bool)]
            for topic, partitions in owned.items()
            if isinstance(topic, str) and isinstance(partitions, list)
        }
    except (ValueError, KeyError, TypeError, RecursionError):
        return -1, {}
    return generation, clean


class StickyAssignor:
    """An aiokafka partition assignor (``partition_assignment_strategy``) with
    its state on the instance: one per consumer."""

    name = NAME
    version = 0

    def __init__(self) -> None:
        self.generation = -1
        self.owned: list[TopicPartition] = []

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(
            self.version, sorted(topics), encode_state(self.generation, self.owned)
        )

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.generation, _ = decode_state(assignment.user_data)
        self.owned = assignment.partitions()

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        reports = {m: decode_state(meta.user_data) for m, meta in members.items()}
        generation = max((g for g, _ in reports.values()), default=-1) + 1
        subscribers: dict[str, list[str]] = defaultdict(list)
        for member, meta in members.items():
            for topic in meta.subscription:
                subscribers[topic].append(member)
        assigned: dict[str, dict[str, list[int]]] = {m: {} for m in members}
        for topic, group in sorted(subscribers.items()):
            partitions = cluster.partitions_for_topic(topic)
            if partitions is None:
                log.warning("no metadata for topic %s: not assigned", topic)
                continue
            claims = {m: (reports[m][0], reports[m][1].get(topic, [])) for m in group}
            for member, kept in balanced(partitions, resolve_claims(claims)).items():
                assigned[member][topic] = kept
        user_data = json.dumps({"generation": generation, "owned": {}}).encode()
        return {
            member: ConsumerProtocolMemberAssignment(
                self.version, sorted(topics.items()), user_data
            )
            for member, topics in assigned.items()
        }
