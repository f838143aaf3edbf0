"""What a ``predict`` call did: :class:`PredictionStats` (``NERExtractor.last_stats``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PredictionStats"]


@dataclass
class PredictionStats:
    """What the last ``predict`` call did (see :attr:`NERExtractor.last_stats`).

    ``truncated`` counts answers that reached ``max_new_tokens`` before ending; ``malformed`` counts answers
    that do not follow the template (only possible with ``constrained=False``); ``windows`` counts the
    windows of all non-empty texts and ``split_texts`` the texts that needed more than one. ``batches`` counts
    the forwards that encoded prompts (with continuous batching, each group of records that joined the batch)
    or the ``generate`` calls. ``constraint_seconds`` is the time spent in the span constraint (building each
    sentence's automaton, its allowed tokens, masking the scores), over ``constrained_row_steps`` rows masked
    summed over the decoding steps: CPU time, which a GPU may wait for.

    Example:
        >>> PredictionStats(records=2, dropped_repeats=1).dropped
        1
    """

    texts: int = 0
    empty_texts: int = 0
    split_texts: int = 0
    windows: int = 0
    records: int = 0
    batches: int = 0
    generated_tokens: int = 0
    truncated: int = 0
    dropped_not_in_input: int = 0
    dropped_repeats: int = 0
    malformed: int = 0
    seconds: float = 0.0
    constraint_seconds: float = 0.0
    constrained_row_steps: int = 0

    @property
    def dropped(self) -> int:
        """Generated spans that were not kept (not in the text, or repeated beyond their occurrences)."""
        return self.dropped_not_in_input + self.dropped_repeats

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
