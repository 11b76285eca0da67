"""Citation handling: finding, stripping unknown and renumbering source ids."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
