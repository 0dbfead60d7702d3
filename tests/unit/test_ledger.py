"""OffsetLedger: in-order acks, holds, owners; checked against a simple model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.ledger import OffsetLedger


def test_acks_go_in_offset_order_and_stop_at_the_first_pending_record() -> None:
    ledger = OffsetLedger()
    for offset, owner in [(0, "a"), (1, "b"), (2, "a"), (3, None)]:
        ledger.add(offset, owner, f"h{offset}")
    ledger.done(3)
    ledger.release("a")  # a's records 0 and 2
    assert ledger.ready() == ["h0"]  # 1 (b) is still pending
    assert ledger.commit_offset == 1
    ledger.release("b", before=2)
    assert ledger.ready() == ["h1", "h2", "h3"]
    assert ledger.commit_offset == 4  # past the last record


def test_offset_zero_and_gaps_are_ordinary_offsets() -> None:
    ledger = OffsetLedger()
    assert ledger.commit_offset is None
    ledger.add(0, None, "first")
    ledger.add(7, None, "after a gap")
    ledger.done(7)
    assert ledger.ready() == []
    ledger.done(0)
    assert ledger.ready() == ["first", "after a gap"]
    assert ledger.commit_offset == 8


def test_a_dead_letter_in_flight_holds_its_record_against_the_owners_release() -> None:
    ledger = OffsetLedger()
    ledger.add(5, "s", "h5")
    ledger.add(6, "s", "h6")
    ledger.hold(5)
    ledger.release("s")  # the session is over...
    assert ledger.ready() == []  # ...but 5's dead letter is not durable yet
    ledger.done(5)
    assert ledger.ready() == ["h5", "h6"]


def test_offsets_must_increase() -> None:
    ledger = OffsetLedger()
    ledger.add(3, None)
    with pytest.raises(ValueError, match="not after"):
        ledger.add(3, None)
    ledger.done(3)
    ledger.ready()
    with pytest.raises(ValueError, match="not after"):
        ledger.add(2, None)


# -- model-based: any sequence of operations ---------------------------------------

OWNERS = ("a", "b", "c", None)


class _Model:
    """The obvious, slow version: a dict of offsets and a scan."""

    def __init__(self) -> None:
        self.records: dict[int, tuple[str | None, bool, bool]] = {}  # owner, done, held
        self.acked: list[int] = []

    def done(self, offset: int) -> None:
        if offset in self.records:
            owner, _, _ = self.records[offset]
            self.records[offset] = (owner, True, False)

    def hold(self, offset: int) -> None:
        if offset in self.records:
            owner, done, _ = self.records[offset]
            self.records[offset] = (owner, done, not done)

    def release(self, owner: str, before: int | None) -> None:
        for offset, (o, done, held) in self.records.items():
            if o == owner and (before is None or offset < before) and not held:
                self.records[offset] = (o, True, held)
            elif o == owner and (before is None or offset < before):
                # released while held: only done() finishes it
                self.records[offset] = (None, done, held)

    def ready(self) -> list[int]:
        out = []
        for offset in sorted(self.records):
            if not self.records[offset][1]:
                break
            out.append(offset)
            del self.records[offset]
        self.acked += out
        return out


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 3), st.sampled_from(OWNERS)),
        st.tuples(st.just("done"), st.integers(0, 40), st.none()),
        st.tuples(st.just("hold"), st.integers(0, 40), st.none()),
        st.tuples(
            st.just("release"),
            st.sampled_from([None, *range(0, 40, 5)]),
            st.sampled_from(OWNERS[:3]),
        ),
        st.tuples(st.just("ready"), st.none(), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_the_ledger_acks_exactly_what_the_model_acks(ops: list[tuple[object, ...]]) -> None:
    ledger, model = OffsetLedger(), _Model()
    next_offset = 0
    for op, a, b in ops:
        if op == "add":
            assert isinstance(a, int)
            next_offset += a
            ledger.add(next_offset, b, next_offset)
            model.records[next_offset] = (b, False, False)  # type: ignore[assignment]
        elif op == "done":
            ledger.done(a)  # type: ignore[arg-type]
            model.done(a)  # type: ignore[arg-type]
        elif op == "hold":
            ledger.hold(a)  # type: ignore[arg-type]
            model.hold(a)  # type: ignore[arg-type]
        elif op == "release":
            ledger.release(b, before=a)  # type: ignore[arg-type]
            model.release(b, a)  # type: ignore[arg-type]
        else:
            assert ledger.ready() == model.ready()
        assert len(ledger) == len(model.records)
    assert ledger.ready() == model.ready()
    # Never an ack past a record that is not done, and always in order.
    assert model.acked == sorted(model.acked)
    pending = sorted(o for o, (_, done, _) in model.records.items())
    if pending:
        assert ledger.commit_offset == pending[0]
