"""Citation handling: finding, stripping unknown and renumbering source ids."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.models import RemovedCitation, Source
from workers.tools.citation_guard import check_citations
from workers.tools.citations import CITATION_RE, cited_ids, renumber_citations, strip_unknown_citations


@pytest.mark.parametrize("text", ["[S1]", "[S12]", "[S1, S3]", "[S1,S3]", "[ S1 ; S3 ]", "[S1 S3]"])
def test_citation_re_matches(text: str) -> None:
    assert CITATION_RE.fullmatch(text)


@pytest.mark.parametrize("text", ["[1]", "[S]", "[s1]", "S1", "[S1 and S3]", "[Source 1]", "[S1,]"])
def test_citation_re_rejects(text: str) -> None:
    assert not CITATION_RE.fullmatch(text)


def test_cited_ids_in_first_appearance_order() -> None:
    text = "A [S3]. B [S1, S3][S7]. C [S1]; see also [S2 ,S7]."
    assert cited_ids(text) == ["S3", "S1", "S7", "S2"]
    assert cited_ids("no citations [1] here") == []


@pytest.mark.parametrize(
    ("text", "expected", "removed"),
    [
        ("Fact [S1].", "Fact [S1].", 0),
        ("Fact [S9].", "Fact.", 1),
        ("Fact [S9] and more.", "Fact and more.", 1),
        ("Fact [S1][S9].", "Fact [S1].", 1),
        ("Fact [S9][S1].", "Fact [S1].", 1),
        ("Fact [S9] [S1].", "Fact [S1].", 1),
        ("Fact [S1, S9, S2].", "Fact [S1, S2].", 1),
        ("Fact [S8, S9].", "Fact.", 2),
        ("Fact [S1], [S9].", "Fact [S1].", 1),
        ("Fact [S9], [S1].", "Fact [S1].", 1),
        ("Fact ([S9]).", "Fact.", 1),
        ("Fact ([S9], [S2]).", "Fact ([S2]).", 1),
        ("[S9] Opening claim.", "Opening claim.", 1),
        ("Fact[S9] next", "Fact next", 1),
        ("- item [S9]\n- other [S1]\n", "- item\n- other [S1]\n", 1),
        ("    code  [S9]  spacing", "    code  spacing", 1),
    ],
)
def test_strip_unknown_citations(text: str, expected: str, removed: int) -> None:
    assert strip_unknown_citations(text, {"S1", "S2"}) == (expected, removed)


def test_strip_keeps_text_holding_the_marker_character() -> None:
    text = "nul \x00 kept [S9]."
    assert strip_unknown_citations(text, set()) == ("nul \x00 kept.", 1)


@given(st.text(alphabet=st.sampled_from(list("S1239[], ;()x.\n\x00")), max_size=80))
def test_strip_never_leaves_unknown_ids(text: str) -> None:
    out, removed = strip_unknown_citations(text, {"S1"})
    assert set(cited_ids(out)) <= {"S1"}
    assert removed >= 0
    assert removed == sum(1 for sid in _all_cited(text) if sid != "S1")


def _all_cited(text: str) -> list[str]:
    return [sid for m in CITATION_RE.finditer(text) for sid in re.findall(r"S\d+", m.group())]


def test_renumber_citations() -> None:
    text = "A [S7]. B [S3, S7]. C [S3][S12]. D [S12] [S7]. E [S3, S3]."
    order = {sid: i for i, sid in enumerate(cited_ids(text), start=1)}
    assert order == {"S7": 1, "S3": 2, "S12": 3}
    assert renumber_citations(text, order) == "A [1]. B [1, 2]. C [2, 3]. D [1, 3]. E [2]."


def test_renumber_keeps_ids_missing_from_the_order() -> None:
    assert renumber_citations("x [S1, S5] y [S5]", {"S1": 1}) == "x [1, S5] y [S5]"


def test_pipeline_strip_then_renumber() -> None:
    report = "Paris is the capital [S4][S99]. It has 2.1M people [S2, S4]. Rumour [S50]."
    clean, removed = strip_unknown_citations(report, {"S2", "S4"})
    assert removed == 2
    order = {sid: n for n, sid in enumerate(cited_ids(clean), start=1)}
    assert renumber_citations(clean, order) == "Paris is the capital [1]. It has 2.1M people [1, 2]. Rumour."


# --- Every form a model writes, checked against the job's sources (citation_guard) ----------------

SOURCES = [
    Source(id="S1", url="https://valdoria.example/wiki/Merrowgate", title="Merrowgate"),
    Source(id="S2", url="https://valdoria.example/wiki/Valdoria", title="Valdoria"),
    Source(id="S3", url="https://valdoria.example/wiki/Sel", title="River Sel"),
]


def check(text: str) -> tuple[str, list[RemovedCitation]]:
    return check_citations(text, SOURCES, "answer")


@pytest.mark.parametrize(
    ("text", "expected", "removed"),
    [
        # canonical ids
        ("Fact [S1]. Fake [S9].", "Fact [S1]. Fake.", ["S9"]),
        ("Both [S1, S9].", "Both [S1].", ["S9"]),
        # a bare number the model writes is read as the id it stands for
        ("Fact [2]. Fake [7].", "Fact [S2]. Fake.", ["S7"]),
        ("Mixed [1, 7, S3].", "Mixed [S1, S3].", ["S7"]),
        ("Adjacent [1][7].", "Adjacent [S1].", ["S7"]),
        # ranges, with hyphens or dashes, in either notation
        ("Range [S1-S3].", "Range [S1, S2, S3].", []),
        ("Range [S2–S5].", "Range [S2, S3].", ["S4", "S5"]),
        ("Range [2-4].", "Range [S2, S3].", ["S4"]),
        ("Huge [S1-S9999].", "Huge [S1].", ["S9999"]),
        # Markdown links: a retrieved url stays linked, another is unlinked to its text
        (
            "See [Merrowgate](https://valdoria.example/wiki/Merrowgate).",
            "See [Merrowgate](https://valdoria.example/wiki/Merrowgate).",
            [],
        ),
        ("See [the atlas](https://fake.example/atlas).", "See the atlas.", ["https://fake.example/atlas"]),
        ("See ![map](https://fake.example/map.png).", "See map.", ["https://fake.example/map.png"]),
        ('See [a](<https://fake.example/a> "title").', "See a.", ["https://fake.example/a"]),
        # an id written as a link to an invented url: the link goes, the id is checked on its own
        ("Fact [S1](https://fake.example/1).", "Fact [S1].", ["https://fake.example/1"]),
        ("Fact [S9](https://fake.example/9).", "Fact.", ["https://fake.example/9", "S9"]),
        # bare urls: a retrieved one stays (spelling differences aside), another is removed
        ("Read https://valdoria.example/wiki/Sel/ now.", "Read https://valdoria.example/wiki/Sel/ now.", []),
        (
            "Read HTTPS://www.Valdoria.example/wiki/Sel#top.",
            "Read HTTPS://www.Valdoria.example/wiki/Sel#top.",
            [],
        ),
        ("Read https://fake.example/x.", "Read.", ["https://fake.example/x"]),
        ("Source: https://fake.example/x", "Source", ["https://fake.example/x"]),
        ("Fact (https://fake.example/x) holds.", "Fact holds.", ["https://fake.example/x"]),
        ("Fact <https://fake.example/x> holds.", "Fact holds.", ["https://fake.example/x"]),
    ],
)
def test_every_citation_form_is_checked(text: str, expected: str, removed: list[str]) -> None:
    out, gone = check(text)
    assert out == expected
    assert [item for r in gone for item in r.removed] == removed
    assert all(r.where == "answer" for r in gone)


def test_removed_citations_say_what_was_written() -> None:
    _, gone = check("A [7]. B [S2-S4]. C [x](https://fake.example/c).")
    assert [(r.citation, r.removed) for r in gone] == [
        ("[x](https://fake.example/c)", ["https://fake.example/c"]),
        ("[7]", ["S7"]),
        ("[S2-S4]", ["S4"]),
    ]


@pytest.mark.parametrize("text", ["items[0] and x[2]", "a footnote[^1]", "no citations at all", "[Source 1]"])
def test_what_is_not_a_citation_is_left_alone(text: str) -> None:
    assert check(text) == (text, [])


_PIECES = st.sampled_from([*"S1239[]-–, ;()x.\n", "https://f.example/a", "](", "[t]"])


@given(st.lists(_PIECES, max_size=40).map("".join))
def test_check_never_leaves_an_unknown_id(text: str) -> None:
    out, _ = check_citations(text, SOURCES[:1], "report")
    assert set(cited_ids(out)) <= {"S1"}
    assert "f.example" not in out


def test_url_glued_to_a_word_is_still_checked() -> None:
    assert check("see Shttps://fake.example/a now") == (
        "see S now",
        [
            RemovedCitation(
                where="answer", citation="https://fake.example/a", removed=["https://fake.example/a"]
            )
        ],
    )
