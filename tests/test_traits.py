"""The trait space: catalogue shape and size, seeded sampling, and query validation."""

from __future__ import annotations

import pytest

from pipeline.core import traits


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


def worn(specs: list[traits.AvatarSpec], key: str) -> float:
    return sum(s.trait_dict.get(key, traits.NONE) != traits.NONE for s in specs) / len(specs)


def test_people_presence_is_what_the_synthetic_people_wear() -> None:
    from pipeline.sandbox.photo import identity_spec

    presence = traits.people_presence()
    assert set(presence) == {"hat", "glasses"}
    people = [identity_spec(f"person {i}", 0) for i in range(6000)]
    for key, share in presence.items():  # 6000 draws: a standard error below 0.006
        assert abs(worn(people, key) - share) < 0.02
    assert presence["hat"] < 0.15 and presence["glasses"] < 0.35  # rarer than the uniform draw's 8/9 and 6/7


@pytest.mark.parametrize("setting", ["people", {"hat": 0.5, "beard": 0.0}, {"glasses": 1.0}])
def test_presence_weights_set_how_often_a_trait_is_worn(setting: object) -> None:
    presence = traits.resolve_presence(setting)  # type: ignore[arg-type]
    specs = traits.sample_specs(catalogue(), 3000, 1, (1, 2), (4, 5), presence=presence)
    assert len(set(specs)) == 3000
    assert specs[:100] == traits.sample_specs(catalogue(), 100, 1, (1, 2), (4, 5), presence=presence)
    for key, share in presence.items():
        among = [s for s in specs if s.gender == 1] if key == "beard" else specs  # women have no beard option
        assert abs(worn(among, key) - share) < 0.03, key
    uniform = traits.sample_specs(catalogue(), 3000, 1, (1, 2), (4, 5))
    assert worn(uniform, "hat") > 0.85 and worn(uniform, "glasses") > 0.8  # 8/9 and 6/7 of a uniform draw
    assert traits.sample_specs(catalogue(), 50, 1, (1, 2), (4, 5), presence={}) == uniform[:50]
    present = [s.trait_dict["hat"] for s in specs if s.trait_dict["hat"] != traits.NONE]
    assert set(present) == set(traits.catalogue_options(1, 5)["hat"]) - {traits.NONE}


def test_presence_weights_refuse_what_the_catalogue_cannot_do() -> None:
    with pytest.raises(ValueError, match=r"'jaw', which is not an optional trait.*'glasses'"):
        traits.sample_specs(catalogue(), 1, 0, (1,), (5,), presence={"jaw": 0.5})
    with pytest.raises(ValueError, match="'wings', which is not an optional trait"):
        traits.sample_specs(catalogue(), 1, 0, (1,), (5,), presence={"wings": 0.5})
    with pytest.raises(ValueError, match="'beard', which is not an optional trait"):
        traits.sample_specs(catalogue(), 1, 0, (2,), (5,), presence={"beard": 0.5})  # women: beard is none only
    tiny = {(1, 4): {"hat": (traits.NONE, 7, 8), "hair": (1, 2)}}
    assert len(traits.sample_specs(tiny, 6, 0, (1,), (4,), presence={"hat": 0.5})) == 6
    with pytest.raises(ValueError, match="exceeds the 2 distinct avatars"):  # no hat: only the two hairs are left
        traits.sample_specs(tiny, 3, 0, (1,), (4,), presence={"hat": 0.0})


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
