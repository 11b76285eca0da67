"""Prompt templates, loaded from `config/prompts/` so users can swap in their model's own.

Templates use `string.Template` placeholders (`${question}`): JSON examples with braces in a
prompt need no escaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from workers.settings import config_dir

_NAMES = (
    "research_system",
    "research_round",
    "research_final",
    "synthesis_system",
    "synthesis_user",
    "synthesis_agent",
    "react_system",
    "react_user",
    "react_final",
    "react_omitted",
)


@dataclass(frozen=True)
class PromptSet:
    research_system: Template
    research_round: Template
    research_final: Template
    synthesis_system: Template
    synthesis_user: Template
    synthesis_agent: Template
    react_system: Template
    react_user: Template
    react_final: Template
    react_omitted: Template

    @classmethod
    def load(cls, folder: Path | None = None) -> PromptSet:
        folder = folder or config_dir() / "prompts"
        missing = [n for n in _NAMES if not (folder / f"{n}.md").is_file()]
        if missing:
            raise FileNotFoundError(f"prompt templates missing in {folder}: {', '.join(missing)}")
        texts = {n: Template((folder / f"{n}.md").read_text(encoding="utf-8")) for n in _NAMES}
        return cls(**texts)
