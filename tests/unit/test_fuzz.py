"""Fuzz targets in the unit tier: every corpus seed, then bounded hypothesis runs.

A target may only raise what the product turns into a dead letter or a failed
session (``tests.fuzz.targets.ALLOWED``); ``make fuzz`` runs the same targets
for long under atheris.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.hostile import catalogue
from tests.fuzz.targets import ALLOWED, TARGETS

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus"
# Targets that start a decoder thread per input run fewer examples.
EXAMPLES = {"decoder": 25, "source": 25}


def run(target: str, data: bytes) -> None:
    with contextlib.suppress(ALLOWED):
        TARGETS[target](data)


def seeds() -> list[tuple[str, Path]]:
    return [(t, f) for t in sorted(TARGETS) for f in sorted((CORPUS / t).iterdir())]


def test_every_target_has_a_corpus() -> None:
    for target in TARGETS:
        assert any((CORPUS / target).iterdir()), target


@pytest.mark.parametrize(("target", "seed"), seeds(), ids=lambda v: getattr(v, "name", v))
def test_corpus_seed(target: str, seed: Path) -> None:
    run(target, seed.read_bytes())


@pytest.mark.parametrize("hostile", catalogue(), ids=lambda h: h.name)
def test_hostile_audio_is_refused_by_the_session_front_end(hostile: object) -> None:
    from tests.fuzz.hostile import Hostile

    assert isinstance(hostile, Hostile)
    if hostile.code == "undecodable_audio":
        run("source", hostile.value)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_with_hypothesis(target: str) -> None:
    @settings(
        max_examples=EXAMPLES.get(target, 150),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(st.binary(max_size=4096))
    def check(data: bytes) -> None:
        run(target, data)

    check()
