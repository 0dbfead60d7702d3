"""Query parameters and refusal bodies (schemas.wire): every documented parameter,
the pass-through, both refusal styles, and a fuzz of the query parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.wire import (
    MAX_PHRASES,
    ErrorBody,
    InvalidParameter,
    PrerecordedParams,
    StreamParams,
    split_patterns,
)


def test_every_documented_parameter_round_trips_through_the_query() -> None:
    query = {
        "encoding": "pcm_s16le",
        "sample_rate": "8000",
        "channels": "2",
        "language": "nl,en",
        "custom_model_id": "m1",
        "include_words": "true",
        "patterns": "AMZ[0-9]{6},[0-9]{4,6}",
        "filler_mode": "verbatim",
        "phrases": "Reson8,order number",
        "bias_strength": "1.5",
        "eager_turn_probability": "0.3",
        "final_turn_probability": "0.8",
    }
    params = StreamParams.from_query("turns", query)
    assert params.patterns == ("AMZ[0-9]{6}", "[0-9]{4,6}")
    assert params.phrases == ("Reson8", "order number")
    assert params.eager == 0.3
    assert StreamParams.from_query("turns", params.to_query()) == params
    assert params.to_query()["eager_turn_probability"] == "0.3"  # a decimal, as clients send


def test_realtime_takes_diarize_and_max_speakers() -> None:
    params = StreamParams.from_query("realtime", {"diarize": "true", "max_speakers": "4"})
    assert params.to_query()["max_speakers"] == "4"


@pytest.mark.parametrize(
    ("endpoint", "query", "param"),
    [
        ("realtime", {"max_speakers": "5"}, "max_speakers"),
        ("turns", {"max_speakers": "2"}, "query"),
        ("realtime", {"eager_turn_probability": "0.3"}, "query"),
        ("turns", {"eager_turn_probability": "0.95"}, "query"),  # eager > final default
        ("turns", {"final_turn_probability": "1.5"}, "final_turn_probability"),
        ("turns", {"final_turn_probability": "nan"}, "final_turn_probability"),
        ("realtime", {"filler_mode": "tidy"}, "filler_mode"),
        ("realtime", {"bias_strength": "-0.1"}, "bias_strength"),
        ("realtime", {"bias_strength": "inf"}, "bias_strength"),
        ("realtime", {"phrases": "a,,b"}, "phrases"),
        ("realtime", {"phrases": ",".join(["w"] * (MAX_PHRASES + 1))}, "phrases"),
        ("realtime", {"patterns": "[0-9]{4},,x"}, "patterns"),
        ("realtime", {"language": "xx"}, "language"),
    ],
)
def test_invalid_parameters_are_refused(endpoint: str, query: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        StreamParams.from_query(endpoint, query)
    assert info.value.param == param


def test_at_most_250_phrases_are_accepted() -> None:
    phrases = ",".join(f"p{i}" for i in range(MAX_PHRASES))
    assert len(StreamParams.from_query("realtime", {"phrases": phrases}).phrases) == MAX_PHRASES


def test_pattern_commas_inside_braces_stay() -> None:
    assert split_patterns("[A-Z]{2}[0-9]{2} [A-Z]{3},[0-9]{4,6}") == (
        "[A-Z]{2}[0-9]{2} [A-Z]{3}",
        "[0-9]{4,6}",
    )


def test_unknown_parameters_pass_through_when_safe() -> None:
    query = {"new_knob": "0.7", "Bad-Name": "x", "odd": "caf\u00e9", "long": "x" * 2000}
    params = StreamParams.from_query("realtime", query)
    assert params.extra_params == {"new_knob": "0.7"}
    assert params.to_query()["new_knob"] == "0.7"


def test_pass_through_is_validated_when_built_directly() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        StreamParams(extra=(("knob", "a\nb"),))
    with pytest.raises(ValueError, match="known parameter"):
        StreamParams(extra=(("language", "en"),))
    with pytest.raises(ValueError, match="at most 16"):
        StreamParams(extra=tuple((f"k{i}", "v") for i in range(17)))


def test_prerecorded_takes_containers_and_refuses_streaming_only_flags() -> None:
    params = PrerecordedParams.from_query({"encoding": "m4a", "diarize": "true"})
    assert params.encoding == "m4a"
    for query in ({"include_interim": "true"}, {"eager_turn_probability": "0.3"}):
        with pytest.raises(InvalidParameter):
            PrerecordedParams.from_query(query)
    with pytest.raises(InvalidParameter):
        StreamParams.from_query("realtime", {"encoding": "m4a"})


@pytest.mark.parametrize(
    ("body", "header", "status", "code", "detail"),
    [
        (
            b'{"code": "UNAUTHORIZED", "detail": "bad key"}',
            "bad key",
            401,
            "UNAUTHORIZED",
            "bad key",
        ),
        (
            b'{"code": "session_rejected", "title": "Rejected"}',
            None,
            402,
            "SESSION_REJECTED",
            "Rejected",
        ),
        (
            b"",
            "organization out of credits",
            402,
            "PAYMENT_REQUIRED",
            "organization out of credits",
        ),
        (b"", "unauthorized", None, "UNAUTHORIZED", "unauthorized"),
        (b"", "free text here", None, "UNKNOWN", "free text here"),
        (b'{"code": 402}', None, 413, "PAYLOAD_TOO_LARGE", None),
        (b"not json", None, 500, "INTERNAL_ERROR", None),
    ],
)
def test_refusals_of_either_style_parse(
    body: bytes, header: str | None, status: int | None, code: str, detail: str | None
) -> None:
    parsed = ErrorBody.parse(body, header, status)
    assert parsed is not None
    assert (parsed.code, parsed.detail) == (code, detail)


def test_402_is_out_of_credits_and_nothing_parses_to_none() -> None:
    parsed = ErrorBody.parse(b"", None, 402)
    assert parsed is not None
    assert parsed.out_of_credits
    assert ErrorBody.parse(b"", None) is None


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    endpoint=st.sampled_from(["realtime", "turns"]),
    query=st.dictionaries(
        st.one_of(st.sampled_from(sorted(StreamParams.model_fields)), _TEXT), _TEXT, max_size=8
    ),
)
def test_fuzz_query_parsing_refuses_or_round_trips(endpoint: str, query: dict[str, str]) -> None:
    try:
        params = StreamParams.from_query(endpoint, query)
    except InvalidParameter:
        return
    assert StreamParams.from_query(endpoint, params.to_query()) == params


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200), header=st.none() | _TEXT, status=st.none() | st.integers())
def test_fuzz_refusal_parsing_never_raises(
    body: bytes, header: str | None, status: int | None
) -> None:
    parsed = ErrorBody.parse(body, header, status)
    if parsed is not None:
        json.dumps(parsed.model_dump())
