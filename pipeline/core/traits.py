"""The avatar trait space: catalogue, query encoding and seeded sampling, shared by renderers and crawlers."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

NONE = -1  # Bitmoji's "no such part" value.

GENDERS = (1, 2)  # 1 = male, 2 = female, as in the avatar-builder API.
STYLES = (4, 5)  # 4 = flat "bitstrips" look, 5 = "deluxe" look with shading.
SCALES = (1, 2, 3)  # Output edge = BASE_SIZE * scale pixels.
ROTATIONS = (0,)  # The sandbox renders frontal heads only.
BASE_SIZE = 256


def rgb_to_tone(r: int, g: int, b: int) -> int:
    """Pack an RGB colour into the decimal integer the API uses for tones."""
    return (r << 16) | (g << 8) | b


def tone_to_rgb(tone: int) -> tuple[int, int, int]:
    """Unpack a decimal tone into (r, g, b)."""
    return (tone >> 16) & 0xFF, (tone >> 8) & 0xFF, tone & 0xFF


SKIN_TONES = tuple(
    rgb_to_tone(*c)
    for c in [
        (255, 224, 196),
        (250, 208, 170),
        (241, 194, 150),
        (226, 170, 128),
        (214, 160, 110),
        (198, 134, 90),
        (176, 116, 76),
        (150, 96, 62),
        (122, 76, 48),
        (96, 60, 40),
        (74, 46, 32),
        (250, 215, 190),
    ]
)
HAIR_TONES = tuple(
    rgb_to_tone(*c)
    for c in [
        (20, 16, 14),
        (60, 40, 28),
        (96, 62, 36),
        (140, 94, 54),
        (182, 134, 78),
        (226, 196, 130),
        (168, 64, 28),
        (200, 96, 50),
        (150, 150, 150),
        (235, 235, 230),
        (70, 40, 110),
        (30, 90, 160),
    ]
)
PUPIL_TONES = tuple(
    rgb_to_tone(*c)
    for c in [(60, 36, 20), (110, 70, 35), (40, 100, 160), (80, 140, 200), (60, 120, 70), (120, 120, 130)]
)


def _ids(base: int, count: int, optional: bool) -> tuple[int, ...]:
    """Option ids in the style of the real API (large opaque integers), with -1 first when optional."""
    values = tuple(base + i for i in range(count))
    return (NONE, *values) if optional else values


# Every trait key the preview endpoint takes, besides gender/style/scale/rotation, with its options.
# Option counts multiply to far beyond a trillion combinations, as in the real API.
_COMMON: dict[str, tuple[int, ...]] = {
    "jaw": _ids(1000, 6, False),  # face shape
    "ear": _ids(1100, 4, False),
    "brow": _ids(1200, 8, False),
    "eye": _ids(1300, 8, False),
    "eyelash": _ids(1400, 3, True),
    "eye_details": _ids(1500, 4, True),  # bags, crow's feet, …
    "cheek_details": _ids(1600, 4, True),  # blush, freckles, dimples, …
    "face_lines": _ids(1700, 4, True),  # forehead and smile lines
    "nose": _ids(1800, 8, False),
    "mouth": _ids(1900, 10, False),
    "glasses": _ids(2000, 6, True),
    "hat": _ids(2100, 8, True),
    "skin_tone": SKIN_TONES,
    "hair_tone": HAIR_TONES,
    "pupil_tone": PUPIL_TONES,
}
_HAIR_SHORT = _ids(2200, 8, True)  # -1 = bald
_HAIR_LONG = _ids(2300, 8, False)
_BEARD = _ids(2400, 8, True)

TRAIT_KEYS: tuple[str, ...] = (*_COMMON.keys(), "hair", "beard")
TONE_KEYS = ("skin_tone", "hair_tone", "pupil_tone")

# People in photos rarely wear hats, and fewer wear glasses than a uniform catalogue draw gives: the share of
# synthetic people whose drawn option of these keys is replaced by none (`pipeline.sandbox.photo.identity_spec`).
PEOPLE_WITHOUT = {"hat": 0.9, "glasses": 0.7}


def catalogue_options(gender: int, style: int) -> dict[str, tuple[int, ...]]:
    """The options of every trait key for one gender and style, in catalogue order."""
    if gender not in GENDERS or style not in STYLES:
        raise ValueError(f"unknown gender/style {gender}/{style}; expected gender in {GENDERS}, style in {STYLES}")
    options = dict(_COMMON)
    if gender == 1:
        options["hair"] = _HAIR_SHORT + _HAIR_LONG[:3]
        options["beard"] = _BEARD
    else:
        options["hair"] = _HAIR_SHORT[1:] + _HAIR_LONG
        options["beard"] = (NONE,)
    if style == 4:  # the flat style has no eyelash or face-line details
        options["eyelash"] = (NONE,)
        options["face_lines"] = (NONE,)
    return options


def catalogue_json() -> dict[str, Any]:
    """The `/avatar-builder-v3/assets` body: traits[gender][style].categories[{key, options[{value}]}]."""
    traits: dict[str, dict[str, Any]] = {}
    for gender in GENDERS:
        traits[str(gender)] = {}
        for style in STYLES:
            categories = [
                {"key": key, "options": [{"value": v} for v in values]}
                for key, values in catalogue_options(gender, style).items()
            ]
            traits[str(gender)][str(style)] = {"categories": categories}
    return {"traits": traits}


Catalogue = dict[tuple[int, int], dict[str, tuple[int, ...]]]  # {(gender, style): {key: options}}


def parse_catalogue(body: Mapping[str, Any]) -> Catalogue:
    """Read an assets body (ours or the real API's) into {(gender, style): {key: options}}.

    Raises:
        ValueError: if the body does not have the traits[gender][style].categories shape.
    """
    try:
        traits = body["traits"]
        genders = traits.items() if isinstance(traits, Mapping) else enumerate(traits)
        out: dict[tuple[int, int], dict[str, tuple[int, ...]]] = {}
        for gender, styles in genders:
            if not styles:
                continue
            style_items = styles.items() if isinstance(styles, Mapping) else enumerate(styles)
            for style, entry in style_items:
                if not entry:
                    continue
                options = {c["key"]: tuple(int(o["value"]) for o in c["options"]) for c in entry["categories"]}
                out[(int(gender), int(style))] = {k: v for k, v in options.items() if v}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"catalogue is not shaped traits[gender][style].categories[{{key, options}}]: {exc!r}"
        ) from None
    if not out:
        raise ValueError("catalogue lists no gender/style with categories")
    return out


def people_presence() -> dict[str, float]:
    """The share of synthetic people who wear each trait `PEOPLE_WITHOUT` thins (hat 0.089, glasses 0.257).

    This is the avatar crawl's default `trait_presence`, so that avatars wear hats and glasses as often as the people
    whose photos are crawled. Hat and glasses have the same options in every gender and style.
    """
    options = catalogue_options(1, 5)
    return {
        key: (1 - without) * sum(v != NONE for v in options[key]) / len(options[key])
        for key, without in PEOPLE_WITHOUT.items()
    }


def resolve_presence(setting: str | Mapping[str, float]) -> dict[str, float]:
    """The presence shares a `crawl.avatars.trait_presence` setting names: `people`, `uniform` (none) or a mapping."""
    if setting == "people":
        return people_presence()
    if setting == "uniform":
        return {}
    if isinstance(setting, str):
        raise ValueError(f"trait_presence {setting!r} is not 'people', 'uniform' or a mapping of trait to share")
    return dict(setting)


def optional_keys(options: Mapping[str, tuple[int, ...]]) -> set[str]:
    """The keys that have a none option and at least one other: the ones a presence share can apply to."""
    return {key for key, values in options.items() if NONE in values and len(values) > 1}


def weighted_options(options: Mapping[str, tuple[int, ...]], presence: Mapping[str, float]) -> dict[str, tuple]:
    """The options a weighted draw can give: a share of 0 leaves only none, a share of 1 drops none."""
    out = dict(options)
    for key in optional_keys(options) & set(presence):
        if presence[key] == 0:
            out[key] = (NONE,)
        elif presence[key] == 1:
            out[key] = tuple(v for v in options[key] if v != NONE)
    return out


def combinations(options: Mapping[str, tuple[int, ...]]) -> int:
    """How many distinct avatars one gender/style of the catalogue can express."""
    total = 1
    for values in options.values():
        total *= len(values)
    return total


@dataclass(frozen=True)
class AvatarSpec:
    """One fully specified avatar: the query of one preview request."""

    gender: int
    style: int
    traits: tuple[tuple[str, int], ...]  # sorted (key, value) pairs
    scale: int = 1
    rotation: int = 0

    @property
    def trait_dict(self) -> dict[str, int]:
        return dict(self.traits)

    def query(self) -> dict[str, str]:
        """Query parameters in the preview endpoint's order and spelling."""
        query = {"scale": str(self.scale), "gender": str(self.gender), "style": str(self.style)}
        query["rotation"] = str(self.rotation)
        query.update({key: str(value) for key, value in self.traits})
        return query

    def key(self) -> str:
        """A stable identifier of this avatar, independent of the endpoint it is fetched from."""
        return "&".join(f"{k}={v}" for k, v in self.query().items())


def make_spec(gender: int, style: int, traits: Mapping[str, int], scale: int = 1, rotation: int = 0) -> AvatarSpec:
    """Build a spec from a trait mapping (order does not matter)."""
    return AvatarSpec(gender, style, tuple(sorted(traits.items())), scale, rotation)


def sample_specs(
    catalogue: Mapping[tuple[int, int], Mapping[str, tuple[int, ...]]],
    count: int,
    seed: int,
    genders: tuple[int, ...],
    styles: tuple[int, ...],
    scale: int = 1,
    presence: Mapping[str, float] | None = None,
) -> list[AvatarSpec]:
    """Draw `count` distinct avatars, seeded; gender and style are mixed uniformly.

    Every trait takes one of its options uniformly, except the optional traits named in `presence`: such a trait is
    present (one of its options other than none, uniformly) with that probability, else none. A gender/style whose
    options of a key are all none, or that has no none option for it, draws that key uniformly. Without `presence`
    the draw is the uniform one, stream for stream.

    The draw is a stream: the first n specs of a larger count equal the specs of count=n, so raising the count
    extends an earlier crawl instead of replacing it.

    Raises:
        ValueError: if no requested gender/style is in the catalogue, `presence` names a key that is optional in none
            of them or a share outside 0..1, or the catalogue cannot hold `count` distinct avatars.
    """
    pairs = [(g, s) for g in genders for s in styles if (g, s) in catalogue]
    if not pairs:
        raise ValueError(f"catalogue has none of genders {genders} x styles {styles}; it has {sorted(catalogue)}")
    presence = dict(presence or {})
    optional = set().union(*(optional_keys(catalogue[p]) for p in pairs))
    for key, share in presence.items():
        if key not in optional:
            raise ValueError(
                f"trait_presence names {key!r}, which is not an optional trait (one with a none option) of genders "
                f"{genders} x styles {styles}; the optional traits are {sorted(optional)}"
            )
        if not 0 <= share <= 1:
            raise ValueError(f"trait_presence of {key!r} is {share}; a share must lie in 0..1")
    capacity = sum(combinations(weighted_options(catalogue[p], presence)) for p in pairs)
    if count > capacity:
        raise ValueError(f"count {count} exceeds the {capacity} distinct avatars the catalogue can express")
    rng = random.Random(seed)
    seen: set[AvatarSpec] = set()
    specs: list[AvatarSpec] = []
    for spec in _stream(rng, catalogue, pairs, scale, presence):
        if spec in seen:
            continue
        seen.add(spec)
        specs.append(spec)
        if len(specs) == count:
            break
    return specs


def _stream(
    rng: random.Random,
    catalogue: Mapping[tuple[int, int], Mapping[str, tuple[int, ...]]],
    pairs: list[tuple[int, int]],
    scale: int,
    presence: Mapping[str, float],
) -> Iterator[AvatarSpec]:
    while True:
        gender, style = pairs[rng.randrange(len(pairs))]
        options = catalogue[(gender, style)]
        weighted = optional_keys(options) & set(presence)
        traits = {}
        for key, values in sorted(options.items()):
            if key in weighted:
                present = [v for v in values if v != NONE]
                traits[key] = present[rng.randrange(len(present))] if rng.random() < presence[key] else NONE
            else:
                traits[key] = values[rng.randrange(len(values))]
        yield make_spec(gender, style, traits, scale)


def validate_query(query: Mapping[str, str]) -> tuple[AvatarSpec | None, str | None, str | None]:
    """Check a preview query against the catalogue.

    Returns:
        (spec, None, None) when valid, else (None, parameter name, message).
    """
    parsed: dict[str, int] = {}
    for name, raw in query.items():
        try:
            parsed[name] = int(raw)
        except ValueError:
            return None, name, f"{name}={raw!r} is not an integer"
    for name, allowed in (("gender", GENDERS), ("style", STYLES)):
        if name not in parsed:
            return None, name, f"{name} is required; one of {list(allowed)}"
        if parsed[name] not in allowed:
            return None, name, f"{name}={parsed[name]} is not one of {list(allowed)}"
    scale = parsed.pop("scale", 1)
    if scale not in SCALES:
        return None, "scale", f"scale={scale} is not one of {list(SCALES)}"
    rotation = parsed.pop("rotation", 0)
    if rotation not in ROTATIONS:
        return None, "rotation", f"rotation={rotation} is not one of {list(ROTATIONS)} (frontal only)"
    gender, style = parsed.pop("gender"), parsed.pop("style")
    options = catalogue_options(gender, style)
    for name in parsed:
        if name not in options:
            return None, name, f"unknown parameter {name!r}; known: {sorted(options)}"
    traits: dict[str, int] = {}
    for key, values in options.items():
        value = parsed.get(key, values[0])  # omitted keys take the catalogue's first option, as Bitmoji does
        if value not in values:
            shown = list(values) if len(values) <= 16 else f"{len(values)} values listed at /avatar-builder-v3/assets"
            return None, key, f"{key}={value} is not an option for gender {gender} style {style}: {shown}"
        traits[key] = value
    return make_spec(gender, style, traits, scale, rotation), None, None


def option_index(key: str, value: int, gender: int = 1, style: int = 5) -> int:
    """Position of a value among the sandbox options of a key (renderers draw by index; -1 stays -1)."""
    if value == NONE:
        return NONE
    values = [v for v in catalogue_options(gender, style)[key] if v != NONE]
    if key == "hair":  # hair ids are shared across genders: index into the union, short styles first
        values = [v for v in (*_HAIR_SHORT, *_HAIR_LONG) if v != NONE]
    return values.index(value)
