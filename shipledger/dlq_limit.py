"""The DLQ limit: how much poison a consumer may dead-letter before it stops instead. Pure.

A dead letter is right for a message that is bad on its own (a producer's bug, a hand-made
event). When most messages turn bad at once, the fault is ours (a processors deploy that
rejects everything, a schema mismatch) and dead-lettering would drain the topics into the DLQ
and commit them: the consumer must stop and page someone instead, with its offsets where
they were, so a fixed deploy reads the same messages again.

Like arroyo's `DlqLimit`, two bounds, both over the messages one consumer (the processors'
handler, the sink) read since it started:

- **ratio over a window**: among the last `window` messages, more than `max_invalid_ratio`
  were dead-lettered, and at least `min_invalid` of them (so the first bad message of a
  quiet topic is not a flood);
- **a run**: more than `max_consecutive` dead letters in a row.

Past either, `DlqLimitState.invalid()` raises `DlqLimitExceeded` before the letter is
produced; the consumer exits with `EXIT_DLQ_LIMIT` without committing. A restarted consumer
counts afresh and stops again if the flood goes on. Replaying many letters that are still
bad (`shipledger dlq replay --all`) counts too: raise `SHIPLEDGER_DLQ_MIN_INVALID` for it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from shipledger.fields import copied
from shipledger.settings import Settings

#: Exit code of a consumer stopped by the DLQ limit (EX_DATAERR: the input is bad, en masse).
EXIT_DLQ_LIMIT = 65


class DlqLimitExceeded(RuntimeError):
    """Too much of what a consumer read was poison: it stops instead of dead-lettering it."""


@dataclass(frozen=True)
class DlqLimit:
    """The bounds (see the module docstring)."""

    max_invalid_ratio: float
    window: int
    min_invalid: int
    max_consecutive: int

    @classmethod
    def from_settings(cls, settings: Settings) -> DlqLimit:
        """The limit configured by `SHIPLEDGER_DLQ_*`."""
        return copied(cls, settings, prefix="dlq_", window=settings.dlq_window_messages)


class DlqLimitState:
    """One consumer's count against its limit; `who` names the consumer in the error."""

    def __init__(self, limit: DlqLimit, who: str) -> None:
        self.limit = limit
        self._who = who
        self._window: deque[bool] = deque(maxlen=limit.window)
        self._invalid = 0
        self._consecutive = 0

    def _push(self, invalid: bool) -> None:
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._invalid -= 1
        self._window.append(invalid)
        self._invalid += invalid

    def valid(self) -> None:
        """A message that was not dead-lettered."""
        self._push(False)
        self._consecutive = 0

    def invalid(self) -> None:
        """A message about to be dead-lettered: raises DlqLimitExceeded past the limit."""
        self._push(True)
        self._consecutive += 1
        limit, seen, bad = self.limit, len(self._window), self._invalid
        if bad >= limit.min_invalid and bad > limit.max_invalid_ratio * seen:
            raise DlqLimitExceeded(
                f"{self._who}: {bad} of the last {seen} messages were poison (limit: "
                f"{limit.max_invalid_ratio:.0%} of {limit.window}, at least "
                f"{limit.min_invalid}): stopping without committing instead of dead-lettering "
                "them; see the DLQ's reasons (`shipledger dlq list`)"
            )
        if self._consecutive > limit.max_consecutive:
            raise DlqLimitExceeded(
                f"{self._who}: {self._consecutive} poison messages in a row (limit: "
                f"{limit.max_consecutive}): stopping without committing instead of "
                "dead-lettering them; see the DLQ's reasons (`shipledger dlq list`)"
            )
