"""The trait space: catalogue shape and size, seeded sampling, and query validation."""

from __future__ import annotations

import pytest

from pipeline.sandbox import traits


def catalogue() -> dict:
    return traits.parse_catalogue(traits.catalogue_json())


def test_catalogue_shape_and_size() -> None:
    body = traits.catalogue_json()
    categories = body["traits"]["1"]["5"]["categories"]
    assert {"key", "options"} <= set(categories[0]) and "value" in categories[0]["options"][0]
    parsed = catalogue()
    assert set(parsed) == {(g, s) for g in traits.GENDERS for s in traits.STYLES}
    for options in parsed.values():
        assert sum(len(v) >= 3 for v in options.values()) >= 10
        assert traits.combinations(options) > 10**12


def test_parse_catalogue_accepts_list_shape_and_rejects_garbage() -> None:
    listed = {"traits": [None, [None, {"categories": [{"key": "hair", "options": [{"value": 7}]}]}]]}
    assert traits.parse_catalogue(listed) == {(1, 1): {"hair": (7,)}}
    with pytest.raises(ValueError, match="traits"):
        traits.parse_catalogue({"avatars": []})


def test_sampling_is_seeded_distinct_mixed_and_a_prefix_stream() -> None:
    specs = traits.sample_specs(catalogue(), 400, 3, (1, 2), (4, 5))
    assert len(set(specs)) == 400
    assert specs == traits.sample_specs(catalogue(), 400, 3, (1, 2), (4, 5))
    assert specs[:50] == traits.sample_specs(catalogue(), 50, 3, (1, 2), (4, 5))
    assert specs != traits.sample_specs(catalogue(), 400, 4, (1, 2), (4, 5))
    mix = {(s.gender, s.style) for s in specs}
    assert mix == {(1, 4), (1, 5), (2, 4), (2, 5)}
    assert all(s.trait_dict["beard"] == traits.NONE for s in specs if s.gender == 2)
    only = traits.sample_specs(catalogue(), 20, 0, (2,), (5,))
    assert {(s.gender, s.style) for s in only} == {(2, 5)}


def test_sampling_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="catalogue has none of genders"):
        traits.sample_specs({(1, 4): {"hair": (1, 2)}}, 1, 0, (2,), (4,))
    with pytest.raises(ValueError, match="exceeds the 2 distinct avatars"):
        traits.sample_specs({(1, 4): {"hair": (1, 2)}}, 3, 0, (1,), (4,))


def test_query_round_trip_and_errors_name_the_parameter() -> None:
    spec = traits.sample_specs(catalogue(), 1, 0, (1,), (5,))[0]
    parsed, _, _ = traits.validate_query(spec.query())
    assert parsed == spec
    cases = {
        "gender": {"gender": "3", "style": "5"},
        "style": {"gender": "1"},
        "hair": {"gender": "1", "style": "5", "hair": "99999"},
        "hat": {"gender": "1", "style": "5", "hat": "x"},
        "wings": {"gender": "1", "style": "5", "wings": "1"},
        "scale": {"gender": "1", "style": "5", "scale": "9"},
        "beard": {"gender": "2", "style": "5", "beard": str(traits.catalogue_options(1, 5)["beard"][2])},
    }
    for name, query in cases.items():
        spec_or_none, parameter, message = traits.validate_query(query)
        assert spec_or_none is None and parameter == name and name in str(message)


def test_tones_are_decimal_rgb() -> None:
    assert traits.tone_to_rgb(traits.rgb_to_tone(12, 200, 7)) == (12, 200, 7)
    assert all(0 <= t < 2**24 for t in traits.SKIN_TONES + traits.HAIR_TONES)
