"""Span-constrained decoding (METHOD.md section 4): the model can only copy spans of its input.

The legal output of one row is exactly :func:`cllmfs_hf.template.format_completion` of some spans of that
row's input sentence, followed by an end-of-sequence token::

    [" "] PREAMBLE ( " <<< " span " >>>" )* EOS

(the optional leading space is the prefix space that SentencePiece/Metaspace tokenizers put on the first
word; the parser ignores it). :class:`SpanConstrainedLogitsProcessor` masks, at every step and for every
row, each next token that cannot continue a legal output.

Where things are:

- :mod:`.vocabulary`: tokenizer introspection and :class:`VocabularyTrie` (built once per tokenizer and
  cached), which maps every token id to the exact bytes it contributes to the decoded text (byte-level BPE
  bytes, SentencePiece ``▁`` as a space, ``<0xNN>`` byte fallback pieces) and stores them in a byte trie.
  The automaton runs on UTF-8 **bytes**, so a token that is half of a multi-byte character is allowed
  exactly where its bytes continue a legal output. Special tokens other than EOS are never allowed.
- :mod:`.automaton` (its named states in :mod:`.states`): the per-row nondeterministic automaton over bytes (in the
  preamble, in a delimiter, inside a span as the set of input positions where the span text so far occurs,
  or between spans). A token is allowed when the trie walk of its bytes keeps the automaton alive and the
  state it reaches can still end in a legal output (so decoding never reaches a dead end); token boundaries
  may fall anywhere, even inside a delimiter.
- :mod:`.processor`: :class:`SpanConstrainedLogitsProcessor`. The state of a row is keyed by its generated
  prefix (beam search reorders rows between steps); the allowed ids of a state are computed once (memoised)
  and the masking itself is one vectorised ``masked_fill`` over the ``(rows, vocab)`` scores.
- :mod:`.config`: :class:`SpanConstraintConfig`: word-boundary spans (default) or any character span,
  maximum span length in words, no duplicate spans (a span text may be emitted at most as many times as it
  occurs in the input), maximum number of spans.
- :mod:`cllmfs_hf.template` (re-exported here): :func:`parse_output` / :class:`ParseResult`, which map
  generated text back to character offsets (the k-th identical span maps to the k-th occurrence in the
  input; spans that are not in the input, only possible without the processor, are dropped and counted,
  never given invented offsets), :func:`span_boundaries` and the delimiters. The parser sits beside
  :func:`~cllmfs_hf.template.format_completion`, the format it inverts.

Example:
    >>> from transformers import LogitsProcessorList  # doctest: +SKIP
    >>> proc = SpanConstrainedLogitsProcessor(tokenizer, ["Ada met Bob in Paris ."])  # doctest: +SKIP
    >>> out = model.generate(**inputs, logits_processor=LogitsProcessorList([proc]))  # doctest: +SKIP
    >>> parse_output("I can extract entities for you, the extracted entities are <<< Paris >>>",
    ...              "Ada met Bob in Paris .").spans
    [(15, 20)]
"""

from __future__ import annotations

from ..template import CLOSE_DELIMITER, OPEN_DELIMITER, ParseResult, parse_output, span_boundaries
from .config import SpanConstraintConfig
from .processor import SpanConstrainedLogitsProcessor
from .vocabulary import VocabularyTrie

__all__ = [
    "SpanConstraintConfig",
    "VocabularyTrie",
    "SpanConstrainedLogitsProcessor",
    "ParseResult",
    "parse_output",
    "span_boundaries",
    "OPEN_DELIMITER",
    "CLOSE_DELIMITER",
]
