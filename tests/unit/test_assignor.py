"""The group's sticky assignor: balanced, complete, and moving only what
balance needs; a member's report survives the round trip through the
protocol; stale or hostile reports count for nothing."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.coordinator.protocol import ConsumerProtocol
from aiokafka.structs import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from workers.assignor import StickyAssignor, balanced, decode_state, resolve_claims

TOPIC = "stt.audio"


@dataclass
class Cluster:
    """What the assignor asks of aiokafka's ClusterMetadata."""

    partitions: dict[str, set[int]]

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


def check(partitions: range, owned: dict[str, list[int]]) -> dict[str, list[int]]:
    result = balanced(partitions, owned)
    assigned = [p for ps in result.values() for p in ps]
    assert sorted(assigned) == list(partitions)  # each partition exactly once
    sizes = [len(ps) for ps in result.values()]
    assert max(sizes) - min(sizes) <= 1  # balanced to within one
    return result


@st.composite
def memberships(draw: st.DrawFn) -> tuple[range, dict[str, list[int]]]:
    """Partitions, and members owning disjoint parts of them (a previous assignment)."""
    n = draw(st.integers(1, 48))
    members = draw(
        st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=9, unique=True)
    )
    owner = draw(st.lists(st.sampled_from([*members, None]), min_size=n, max_size=n))
    owned = {m: [p for p, o in enumerate(owner) if o == m] for m in members}
    return range(n), owned


@given(memberships())
def test_every_partition_once_balanced_and_each_member_keeps_its_share(
    case: tuple[range, dict[str, list[int]]],
) -> None:
    partitions, owned = case
    result = check(partitions, owned)
    base = len(partitions) // len(owned)
    for member, mine in owned.items():
        kept = set(result[member]) & set(mine)
        assert len(kept) >= min(len(mine), base), (member, mine, result[member])


@given(memberships())
def test_an_assignment_that_is_balanced_already_stays_as_it_is(
    case: tuple[range, dict[str, list[int]]],
) -> None:
    partitions, owned = case
    first = check(partitions, owned)
    assert check(partitions, first) == first


def test_a_third_member_joining_moves_only_what_it_takes() -> None:
    before = {"a": [0, 1, 2, 3], "b": [4, 5, 6, 7]}
    after = check(range(8), {**before, "c": []})
    assert len(after["c"]) == 2
    moved = sum(1 for m in before for p in before[m] if p not in after[m])
    assert moved == 2
    assert (len(after["a"]), len(after["b"])) == (3, 3)


def test_a_member_leaving_hands_over_only_its_own() -> None:
    after = check(range(8), {"a": [0, 1, 2], "b": [3, 4, 5]})  # c (6, 7) left
    assert set(after["a"]) >= {0, 1, 2}
    assert set(after["b"]) >= {3, 4, 5}


def test_a_partition_claimed_twice_goes_to_the_newer_claim() -> None:
    owned = resolve_claims({"back": (3, [0, 1]), "current": (5, [1, 2]), "twin": (5, [2])})
    assert owned == {"back": [0], "current": [1], "twin": []}  # 2: a tie, nobody's


def test_claims_outside_the_topic_are_ignored() -> None:
    result = check(range(4), {"a": [7, -1, 0], "b": []})
    assert 0 in result["a"]


def test_the_report_round_trips_through_the_group_protocol() -> None:
    leader, follower = StickyAssignor(), StickyAssignor()
    cluster = Cluster({TOPIC: set(range(6))})
    members = {
        "m-leader": ConsumerProtocol.METADATA.decode(leader.metadata({TOPIC}).encode()),
        "m-follower": ConsumerProtocol.METADATA.decode(follower.metadata({TOPIC}).encode()),
    }
    first = leader.assign(cluster, members)
    for assignor, member in ((leader, "m-leader"), (follower, "m-follower")):
        assignor.on_assignment(ConsumerProtocol.ASSIGNMENT.decode(first[member].encode()))
    assert leader.generation == follower.generation == 0
    owned = {m: set(a.partitions()) for m, a in first.items()}
    # A third member joins: the two keep 2 of their 3 each.
    newcomer = StickyAssignor()
    members = {
        "m-leader": ConsumerProtocol.METADATA.decode(leader.metadata({TOPIC}).encode()),
        "m-follower": ConsumerProtocol.METADATA.decode(follower.metadata({TOPIC}).encode()),
        "m-new": ConsumerProtocol.METADATA.decode(newcomer.metadata({TOPIC}).encode()),
    }
    second = leader.assign(cluster, members)
    for member in ("m-leader", "m-follower"):
        now = set(second[member].partitions())
        assert len(now & owned[member]) == 2
    assert len(second["m-new"].partitions()) == 2
    leader.on_assignment(ConsumerProtocol.ASSIGNMENT.decode(second["m-leader"].encode()))
    assert leader.generation == 1
    assert all(isinstance(tp, TopicPartition) for tp in leader.owned)


def test_a_member_not_subscribed_to_a_topic_gets_none_of_it() -> None:
    assignor = StickyAssignor()
    cluster = Cluster({TOPIC: {0, 1}, "other": {0}})
    members = {
        "a": assignor.metadata({TOPIC}),
        "b": assignor.metadata({TOPIC, "other"}),
    }
    result = assignor.assign(cluster, members)
    assert all(tp.topic == TOPIC for tp in result["a"].partitions())
    assert TopicPartition("other", 0) in result["b"].partitions()


@given(st.binary(max_size=200))
def test_a_malformed_report_owns_nothing(data: bytes) -> None:
    generation, owned = decode_state(data)
    if generation == -1:
        assert owned == {}
    assert all(all(isinstance(p, int) for p in ps) for ps in owned.values())


def test_an_oversized_report_owns_nothing() -> None:
    data = b'{"generation": 9, "owned": {"t": [' + b"1," * 40000 + b"1]}}"
    assert decode_state(data) == (-1, {})
