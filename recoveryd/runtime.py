"""What the loops consult for each record: the config and what derives from it.

A reload builds a new `Runtime` and swaps it in whole; a loop reads the
current one once per batch, so a batch never sees half of each.
"""

from __future__ import annotations

from dataclasses import dataclass

from recoveryd.classify import Classifier
from recoveryd.config import Config
from recoveryd.keys import Keys

__all__ = ["Runtime"]


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    classifier: Classifier
    keys: Keys

    @classmethod
    def from_config(cls, config: Config) -> Runtime:
        return cls(
            config=config,
            classifier=Classifier.from_config(config),
            keys=Keys(config.redis.prefix),
        )
