"""The extraction API: ``NERExtractor`` turns texts into entity mentions with character offsets.

One query is one (text, entity type) record prompted with the CLLMFS template (:mod:`cllmfs_hf.template`);
the answer is decoded with :class:`~cllmfs_hf.decoding.SpanConstrainedLogitsProcessor` (so every mention is a
span of the text) and parsed back to offsets (:func:`~cllmfs_hf.decoding.parse_output`).

How ``predict`` runs:

- Records (text x type) are grouped by type and sorted by prompt length. Greedy decoding (the default)
  batches them continuously: up to ``batch_size`` records decode at once, each leaves at its end-of-sequence
  (or its own cap) and waiting records are encoded and join the running rows (``drop_finished_rows``,
  :mod:`.greedy`). Sampling and beam search run ``model.generate`` on batches with left padding. The prompt
  prefix shared by all records of a type (chat template, instruction) is encoded once per type and call
  (``prefix_cache``). A progress bar appears for runs of more than ``progress_threshold`` records (or force it
  with ``progress=True``/``False``).
- **Prefilled preamble** (``prefill_preamble=True``, the default): every prompt ends with the answer's fixed
  preamble, tokenized with the prompt exactly as training tokenized prompt + completion, so it costs no
  decoding step; generation starts with a span or end-of-sequence, and ``max_new_tokens`` counts the tokens
  after the preamble. A trained adapter gives the same greedy answers as with the preamble generated token
  by token; an untrained base may differ, since under the constraint it spells the preamble with other
  tokens than training used.
- Texts longer than the model's context are split into overlapping windows at word boundaries; nothing is
  cut. **Window policy**: a mention that touches a window edge which is not an edge of the text is dropped
  from that window (the neighbouring window, which overlaps it by ``window_overlap`` tokens, sees it
  whole); identical mentions from two windows count once; overlapping mentions of the same type from
  different windows are resolved in favour of the one farther from its window's edges (more context). A
  mention longer than the overlap that crosses a window edge can be missed: raise ``window_overlap`` (or
  ``max_context``) for texts with very long mentions. ``last_stats.split_texts`` says how many texts were split.
- **Overlap policy for different types** (``overlap_policy``): ``"keep_all"`` (default) returns every
  predicted mention, so mentions of different types may overlap (each type is an independent query, as in
  the paper's evaluation); ``"longest"`` keeps a non-overlapping subset, preferring longer mentions, then the
  type listed first in ``entity_types``, then the earlier start.
- **Bad input**: ``texts`` must be a list of strings (a bare string raises ``TypeError`` naming the fix);
  empty or whitespace-only texts give an empty list without querying the model; an empty type list,
  non-string or empty type names raise ``ValueError``/``TypeError``; a type the extractor was not
  configured for (an adapter's ``entity_types``) raises ``ValueError`` unless ``allow_unknown_types=True``.
- Outputs that hit ``max_new_tokens`` before ending keep their complete mentions and are counted in
  :attr:`NERExtractor.last_stats` (``truncated``) with a warning; spans dropped by the parser (only possible
  with ``constrained=False``) are counted there too.

Files
-----
- ``api.py``: :class:`NERExtractor` (construction, prompts, ``predict``, ``score``/``evaluate``).
- ``stats.py``: :class:`PredictionStats` (``NERExtractor.last_stats``).
- ``validation.py``: the input checks (texts, entity types, annotated sentences, context size, special
  tokens).
- ``windows.py``: splitting long texts into overlapping windows and merging the windows' mentions back.
- ``prefix_cache.py``: encoding the prompt prefix shared by all records of a type once and reusing its
  key/value cache (batch layout ``[prefix][padding][rest]``).
- ``greedy.py``: greedy decoding with continuous batching (records leave at their end, waiting ones join
  the running rows, their key/value caches joined).
- ``generation.py``: records, batches of one type, one ``generate`` call per batch (sampling, beams) and the
  parsing of the answers.
- ``lora_merge.py``: a ``PeftModel``'s LoRA deltas merged into its base weights while extracting (and for good
  in ``from_pretrained``), so each decoding step runs a plain model.
- ``corpus.py``: ``predict_file``: a corpus file (JSON lines or text) streamed into a JSON-lines output,
  resumable, sharded over the processes of ``accelerate launch``.

Example:
    >>> extractor = NERExtractor.from_pretrained("smollm2-135m-instruct")  # doctest: +SKIP
    >>> extractor.predict(["Ada Lovelace met Charles Babbage in London ."], ["person", "location"])  # doctest: +SKIP
    [[{'start': 0, 'end': 12, 'text': 'Ada Lovelace', 'label': 'person'}, ...]]
"""

from __future__ import annotations

from .api import NERExtractor
from .api import OverlapPolicy as OverlapPolicy  # the overlap_policy type, importable from here as before
from .corpus import CorpusSummary, read_corpus
from .stats import PredictionStats

__all__ = ["CorpusSummary", "NERExtractor", "PredictionStats", "read_corpus"]
