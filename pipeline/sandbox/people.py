"""Names of synthetic sandbox people for any count: a roster of 60, then new pairs of its first and last names."""

from __future__ import annotations

# The sandbox draws a person (traits, photos) for any name; these are made up. The first 16 were the default
# identities before names were generated, and all 60 are the paper profile's people.
ROSTER = (
    "Avery Quinn", "Blake Moreno", "Casey Lindqvist", "Dana Okafor", "Eli Brandt", "Farah Haddad", "Gus Petrov",
    "Hana Sato", "Ivan Novak", "Jade Whitaker", "Kofi Mensah", "Lena Fischer", "Marco Bellini", "Nia Adeyemi",
    "Omar Rahimi", "Priya Raman", "Quinn Albescu", "Rosa Bakker", "Sami Castillo", "Tariq Dubois", "Uma Eriksen",
    "Vera Farouk", "Wes Gallo", "Xena Horvat", "Yusuf Iversen", "Zara Jansen", "Arjun Kowalski", "Bea Larsen",
    "Cyrus Mbeki", "Dalia Nakamura", "Emil Ortiz", "Fumiko Pereira", "Gael Quispe", "Hiro Rossi", "Ines Silva",
    "Joao Tanaka", "Kira Ueda", "Liam Varga", "Mina Weber", "Nils Xu", "Olga Yilmaz", "Pavel Zhou", "Rhea Abara",
    "Soren Berg", "Tess Costa", "Ugo Duarte", "Vik Engel", "Wanda Ferrari", "Yara Grieg", "Zeno Hansen", "Alma Ito",
    "Bruno Jovanovic", "Chiara Keller", "Dmitri Lopez", "Esme Moretti", "Felix Nowak", "Greta Olsen", "Hugo Park",
    "Ilse Reyes", "Jonas Schmidt",
)  # fmt: skip
_FIRST = tuple(name.split()[0] for name in ROSTER)
_LAST = tuple(name.split()[1] for name in ROSTER)
CAPACITY = len(_FIRST) * len(_LAST)  # distinct names the generator can give


def synthetic_names(count: int) -> list[str]:
    """The first `count` names: the roster, then round r pairs first name j with last name j + r.

    The names are a stream (the first n of a larger count equal count=n), so raising the count adds people and
    keeps everyone crawled before. Every name is distinct, and so is its folder (`safe_name`).

    Raises:
        ValueError: if `count` is not in 0..CAPACITY.
    """
    if not 0 <= count <= CAPACITY:
        raise ValueError(f"{count} synthetic people asked for; the sandbox names at most {CAPACITY}")
    size = len(_FIRST)
    return [f"{_FIRST[i % size]} {_LAST[(i % size + i // size) % size]}" for i in range(count)]
