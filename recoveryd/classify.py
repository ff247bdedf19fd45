"""Classification: why a task failed, and what to do about it.

(Interface stub; the full classifier replaces this module.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import re2

from recoveryd.categories import TEMPORARY, CategorySettings
from recoveryd.records import FailureRecord


class PatternError(ValueError):
    """A regex the linear-time engine cannot run."""


class Classification(msgspec.Struct, frozen=True, kw_only=True):
    category: str
    action: str
    confidence: float
    pattern: str


def compile_pattern(regex: str) -> re2._Regexp:
    try:
        return re2.compile(regex)
    except re2.error as exc:
        raise PatternError(f"the regex engine (RE2) cannot run {regex!r}: {exc}") from None


class Classifier:
    def __init__(
        self,
        categories: Mapping[str, CategorySettings],
        patterns: Sequence[object] = (),
        fallback: str = TEMPORARY,
    ) -> None:
        self._categories = categories
        self._fallback = fallback

    def classify(self, record: FailureRecord) -> Classification:
        category = self._fallback
        return Classification(
            category=category,
            action=self._categories[category].action,
            confidence=0.1,
            pattern="fallback",
        )

    @classmethod
    def from_config(cls, config: "Config") -> "Classifier":  # noqa: F821
        return cls(config.categories, config.patterns, config.classify.fallback)
