"""`google_scholar`: scholarly search over its own provider chain, always available."""

from workers.tools.scholar.build import SCHOLAR_DESCRIPTION, build_scholar_tool

__all__ = ["SCHOLAR_DESCRIPTION", "build_scholar_tool"]
