"""Producer headers (schemas.envelope): one header per documented Reson8 parameter,
the ``stt-param-<name>`` pass-through, and the API the worker relies on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import CONFIG_HEADERS, PARAM_PREFIX, BadHeader, parse_headers

TURNS = {
    "stt-endpoint": "turns",
    "stt-eager-turn-probability": "0.3",
    "stt-final-turn-probability": "0.8",
    "stt-patterns": "AMZ[0-9]{6},[0-9]{4,6}",
    "stt-filler-mode": "verbatim",
    "stt-phrases": "Reson8, order number",
    "stt-bias-strength": "2",
    "stt-param-new_knob": "on",
}


def test_every_documented_parameter_reaches_the_upstream_query() -> None:
    config = parse_headers(TURNS).session_config()
    query = config.upstream_params("pcm_s16le", 16000, 1).to_query()
    assert query["eager_turn_probability"] == "0.3"
    assert query["final_turn_probability"] == "0.8"
    assert query["patterns"] == "AMZ[0-9]{6},[0-9]{4,6}"
    assert query["filler_mode"] == "verbatim"
    assert query["phrases"] == "Reson8,order number"
    assert query["bias_strength"] == "2.0"
    assert query["new_knob"] == "on"


def test_max_speakers_goes_with_diarize_on_realtime() -> None:
    headers = {"stt-options": "diarize", "stt-max-speakers": "3"}
    query = parse_headers(headers).session_config().upstream_params("pcm_s16le", 16000, 1)
    assert query.to_query()["max_speakers"] == "3"


@pytest.mark.parametrize(
    "headers",
    [
        {"stt-max-speakers": "2"},  # without diarize
        {"stt-options": "diarize", "stt-max-speakers": "9"},
        {"stt-endpoint": "turns", "stt-eager-turn-probability": "0.95"},
        {"stt-eager-turn-probability": "0.3"},  # realtime has no turns
        {"stt-endpoint": "turns", "stt-final-turn-probability": "x"},
        {"stt-bias-strength": "-1"},
        {"stt-filler-mode": "tidy"},
        {"stt-phrases": ",".join(["w"] * 251)},
        {"stt-param-language": "en"},  # a known parameter has its own header
        {"stt-param-bad-name": "x"},
        {"stt-param-knob": "x" * 2000},
    ],
)
def test_bad_parameter_headers_are_bad_records(headers: dict[str, str]) -> None:
    with pytest.raises(BadHeader):
        parse_headers(headers)


def test_a_later_record_changes_parameters() -> None:
    config = parse_headers(TURNS).session_config()
    changed = config.with_overrides({"stt-final-turn-probability": "0.95"})
    assert changed.final_turn_probability == 0.95
    assert changed != config
    assert config.with_overrides({}) == config
    assert parse_headers(TURNS).has_config


def test_header_names_follow_one_scheme() -> None:
    for header, field in CONFIG_HEADERS.items():
        assert header == "stt-" + field.replace("_", "-") or field in {"options"}


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.one_of(
            st.sampled_from([*CONFIG_HEADERS, PARAM_PREFIX + "knob", "stt-kind", "stt-seq"]),
            st.text(max_size=20),
        ),
        st.text(st.characters(codec="ascii"), max_size=30),
        max_size=6,
    )
)
def test_fuzz_headers_parse_or_are_bad_records(headers: dict[str, str]) -> None:
    try:
        parsed = parse_headers(headers)
    except BadHeader:
        return
    config = parsed.session_config()
    config.upstream_params("pcm_s16le", 16000, 1).to_query()
