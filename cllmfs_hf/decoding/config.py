"""What the span-constrained decoder allows (:class:`SpanConstraintConfig`).

Options: word-boundary spans (default) or any character span, maximum span length in words, no duplicate
spans (a span text may be emitted at most as many times as it occurs in the input), maximum number of spans,
an optional space before the preamble, and whether the prompt already ends with the preamble.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["SpanConstraintConfig"]


@dataclass
class SpanConstraintConfig:
    """What the span-constrained decoder allows.

    Example:
        >>> SpanConstraintConfig(max_span_words=5).word_boundaries
        True
        >>> SpanConstraintConfig(max_spans=0)
        Traceback (most recent call last):
        ...
        ValueError: max_spans must be None or an integer >= 1, got 0: use None for no limit.
    """

    word_boundaries: bool = field(
        default=True,
        metadata={
            "help": "Spans start and end at word boundaries (words are runs of letters/digits/underscore, and "
            "every other non-space character is a word of its own, so 'Paris' is a span of 'Paris,'). "
            "False allows any character span that neither starts nor ends with whitespace."
        },
    )
    max_span_words: int | None = field(
        default=None,
        metadata={"help": "Maximum number of whitespace-separated words in one span (None: no limit)."},
    )
    allow_duplicates: bool = field(
        default=False,
        metadata={
            "help": "False (default): a span text may be emitted at most as many times as it occurs in the input "
            "(stops loops such as '<<< North >>>' repeated until the token cap). True: no such limit."
        },
    )
    max_spans: int | None = field(
        default=None, metadata={"help": "Maximum number of spans in one output (None: no limit)."}
    )
    max_spans_per_word: float | None = field(
        default=0.5,
        metadata={
            "help": "At most ceil(this x the input's whitespace words) spans in one output (None: no such "
            "limit). It bounds runaway answers (an untrained model listing every word of the sentence) without "
            "cutting correct ones: on the dev splits of CrossNER politics and science, WikiGold, WNUT-17, "
            "NCBI-disease and Few-NERD INTER, no sentence has more mentions of one type than half its tokens."
        },
    )
    ordered_spans: bool = field(
        default=True,
        metadata={
            "help": "Each span starts at or after the end of the one before it (mentions in order of appearance, "
            "none overlapping), as the training records list them: a mention of one type never overlaps another "
            "in flat NER. It stops runaway answers that list ever longer spans from one start ('<<< Lincoln >>> "
            "<<< Lincoln replaced >>> ...'). False allows any order and overlaps (nested annotations)."
        },
    )
    allow_leading_space: bool = field(
        default=True,
        metadata={
            "help": "Allow one space before the preamble (SentencePiece/Metaspace tokenizers encode the first "
            "word with a prefix space, so a model trained on them emits it)."
        },
    )

    preamble_in_prompt: bool = field(
        default=False,
        metadata={
            "help": "The prompt already ends with the preamble (prefilled in the prompt's forward pass, as "
            "NERExtractor does): the constrained output starts after it, with a span or end-of-sequence. "
            "False: the model generates the preamble itself, token by token."
        },
    )

    def __post_init__(self) -> None:
        if self.max_span_words is not None and (
            isinstance(self.max_span_words, bool)
            or not isinstance(self.max_span_words, int)
            or self.max_span_words < 1
        ):
            raise ValueError(
                f"max_span_words must be None or an integer >= 1, got {self.max_span_words!r}: use None for no limit."
            )
        if self.max_spans is not None and (
            isinstance(self.max_spans, bool) or not isinstance(self.max_spans, int) or self.max_spans < 1
        ):
            raise ValueError(
                f"max_spans must be None or an integer >= 1, got {self.max_spans!r}: use None for no limit."
            )
        if self.max_spans_per_word is not None and (
            isinstance(self.max_spans_per_word, bool)
            or not isinstance(self.max_spans_per_word, (int, float))
            or not self.max_spans_per_word > 0
        ):
            raise ValueError(
                f"max_spans_per_word must be None or a number > 0, got {self.max_spans_per_word!r}: use None for "
                "no limit."
            )
        for name in (
            "word_boundaries",
            "allow_duplicates",
            "ordered_spans",
            "allow_leading_space",
            "preamble_in_prompt",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")

    def key(self) -> tuple:
        """A hashable summary (used to cache per-sentence automata)."""
        return tuple(getattr(self, f.name) for f in fields(self))
