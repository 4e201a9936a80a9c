"""The matching engine: profiles × new papers → ranked items with reasons.

Public API: ``validate_query``, ``MatchSettings``, ``Matcher`` (see docs/matching.md).
"""

from __future__ import annotations

from pipeline.match.engine import Matcher
from pipeline.match.query import QueryError, validate_query
from pipeline.match.result import MatchResult
from pipeline.match.settings import MatchSettings

__all__ = ["MatchResult", "MatchSettings", "Matcher", "QueryError", "validate_query"]
