"""The simulated model's summariser role (SIMULATION): goal-directed extraction from a page."""

from __future__ import annotations

import json

from workers.sim.text import Reply, keywords, shorten, stems, top_sentences


def summarise(goal: str, page: str) -> Reply:
    """Goal-directed extraction, in the JSON shape of the Tongyi visit summariser."""
    terms = stems(goal)
    evidence = top_sentences(page, terms, 3)
    if evidence:
        result = {
            "rational": "Simulated extraction: these sentences share the most terms with the goal ("
            + ", ".join(keywords(goal)[:6])
            + ").",
            "evidence": " ".join(evidence),
            "summary": shorten(" ".join(top_sentences(page, terms, 1)), 400),
        }
    else:
        result = {
            "rational": "Simulated extraction: no sentence of the page shares a term with the goal.",
            "evidence": "",
            "summary": "The page does not contain information relevant to the goal.",
        }
    return Reply("summariser", json.dumps(result))
