"""The extraction API: ``NERExtractor`` turns texts into entity mentions with character offsets.

One query is one (text, entity type) record prompted with the CLLMFS template (:mod:`cllmfs_hf.template`);
the answer is decoded with :class:`~cllmfs_hf.decoding.SpanConstrainedLogitsProcessor` (so every mention is a
span of the text) and parsed back to offsets (:func:`~cllmfs_hf.decoding.parse_output`).

How ``predict`` runs:

- Records (text x type) are grouped by type, sorted by prompt length and generated in batches with left
  padding; a batch stops as soon as every row has emitted end-of-sequence. The prompt prefix shared by all
  records of a type (chat template, instruction) is encoded once per type and call (``prefix_cache``). A progress bar appears for runs of more than
  ``progress_threshold`` records (or force it with ``progress=True``/``False``).
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

Example:
    >>> extractor = NERExtractor.from_pretrained("smollm2-135m-instruct")  # doctest: +SKIP
    >>> extractor.predict(["Ada Lovelace met Charles Babbage in London ."], ["person", "location"])  # doctest: +SKIP
    [[{'start': 0, 'end': 12, 'text': 'Ada Lovelace', 'label': 'person'}, ...]]
"""

from __future__ import annotations

import copy
import logging
import re
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from transformers import LogitsProcessorList

from .data.descriptions import describe_type
from .data.labels import type_name
from .data.records import label_set
from .data.types import AnnotatedSentence, Mention, dataset_to_sentences
from .decoding import (
    SpanConstrainedLogitsProcessor,
    SpanConstraintConfig,
    VocabularyTrie,
    parse_output,
)
from .evaluation import NERScores, ScoreAccumulator
from .template import PREAMBLE, prompt_messages

__all__ = ["NERExtractor", "PredictionStats"]

logger = logging.getLogger(__name__)

_WORD_RE = re.compile(r"\S+")
OverlapPolicy = Literal["keep_all", "longest"]


@dataclass
class PredictionStats:
    """What the last ``predict`` call did (see :attr:`NERExtractor.last_stats`).

    ``truncated`` counts answers that reached ``max_new_tokens`` before ending; ``malformed`` counts answers
    that do not follow the template (only possible with ``constrained=False``); ``windows`` counts the
    windows of all non-empty texts and ``split_texts`` the texts that needed more than one.

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

    @property
    def dropped(self) -> int:
        """Generated spans that were not kept (not in the text, or repeated beyond their occurrences)."""
        return self.dropped_not_in_input + self.dropped_repeats

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Record:
    text_index: int
    window: int
    label: str
    sentence: str
    offset: int
    prompt_ids: list[int]
    sentence_tokens: int


class NERExtractor:
    """Few-shot NER with a decoder LLM: ``predict`` texts, ``evaluate`` on annotated sentences.

    Args:
        model: a causal LM (a plain ``PreTrainedModel`` or a ``PeftModel``).
        tokenizer: its tokenizer (with a chat template; its padding side is not changed).
        entity_types: the labels to query by default; when given, other labels are refused unless
            ``allow_unknown_types=True`` is passed to ``predict``.
        descriptions: label -> description overriding the built-in table (:mod:`cllmfs_hf.data.descriptions`).
        type_names: label -> readable name in the instruction (default :func:`cllmfs_hf.data.labels.type_name`).
        constraint: the :class:`~cllmfs_hf.decoding.SpanConstraintConfig` of constrained decoding.
        max_context: tokens of context (default: the model's ``max_position_embeddings``).
        window_overlap: tokens shared by consecutive windows of a long text.
        overlap_policy: ``"keep_all"`` or ``"longest"`` (module docstring).
        progress_threshold: show a progress bar when a call has more records than this.
        prefix_cache: compute the key/value cache of the prompt part shared by all records of a type (chat
            template, system prompt, instruction) once per type and call, instead of once per record. It is
            checked once against a plain forward (logits must agree) and switched off if they do not.

    Example:
        >>> extractor = NERExtractor(model, tokenizer, entity_types=["PER", "LOC"])  # doctest: +SKIP
        >>> extractor.predict(["Ada met Bob in Paris ."])  # doctest: +SKIP
        [[{'start': 0, 'end': 3, 'text': 'Ada', 'label': 'PER'}, ...]]
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        entity_types: Sequence[str] | None = None,
        descriptions: Mapping[str, str] | None = None,
        *,
        type_names: Mapping[str, str] | None = None,
        constraint: SpanConstraintConfig | None = None,
        max_context: int | None = None,
        window_overlap: int = 32,
        overlap_policy: OverlapPolicy = "keep_all",
        progress_threshold: int = 64,
        prefix_cache: bool = True,
    ) -> None:
        if not hasattr(model, "generate"):
            raise TypeError(f"model must be a generative model with .generate(), got {type(model).__name__}.")
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "The tokenizer has no chat template: CLLMFS prompts go through apply_chat_template. Use the "
                "model's own tokenizer (cllmfs_hf.models.load_tokenizer) or set tokenizer.chat_template."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.entity_types = (
            self._check_types(entity_types, "entity_types") if entity_types is not None else None
        )
        self.descriptions = dict(descriptions or {})
        self.type_names = dict(type_names or {})
        self.constraint = constraint or SpanConstraintConfig()
        if not isinstance(self.constraint, SpanConstraintConfig):
            raise TypeError("constraint must be a cllmfs_hf.decoding.SpanConstraintConfig.")
        if max_context is None:
            max_context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
            model_max = getattr(tokenizer, "model_max_length", None)
            if isinstance(model_max, int) and model_max < 1_000_000:
                max_context = min(max_context, model_max) if max_context else model_max
        if not isinstance(max_context, int) or max_context < 32:
            raise ValueError(
                f"max_context must be an integer >= 32 (tokens), got {max_context!r}: pass max_context= explicitly "
                "when the model config has no max_position_embeddings."
            )
        self.max_context = max_context
        if not isinstance(window_overlap, int) or window_overlap < 0:
            raise ValueError(f"window_overlap must be an integer >= 0 (tokens), got {window_overlap!r}.")
        self.window_overlap = window_overlap
        if overlap_policy not in ("keep_all", "longest"):
            raise ValueError(f"overlap_policy must be 'keep_all' or 'longest', got {overlap_policy!r}.")
        self.overlap_policy = overlap_policy
        self.progress_threshold = progress_threshold
        if not isinstance(prefix_cache, bool):
            raise ValueError(f"prefix_cache must be True or False, got {prefix_cache!r}.")
        self.prefix_cache = prefix_cache
        self._prefix_verified: bool | None = None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("The tokenizer has neither a pad nor an EOS token: set tokenizer.pad_token.")
        self.pad_token_id = int(pad)
        eos: list[int] = []
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for e in (gen_eos, tokenizer.eos_token_id):
            if isinstance(e, int):
                eos.append(e)
            elif isinstance(e, (list, tuple)):
                eos.extend(int(x) for x in e)
        if not eos:
            raise ValueError("Neither the model's generation config nor the tokenizer defines an EOS token.")
        self.eos_token_ids = sorted(set(eos))
        self.trie = VocabularyTrie.for_tokenizer(tokenizer)
        self._preamble_tokens = len(tokenizer(PREAMBLE, add_special_tokens=False)["input_ids"])
        self._overhead: dict[str, int] = {}
        self.last_stats = PredictionStats()

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | None = None,
        *,
        entity_types: Sequence[str] | None = None,
        descriptions: Mapping[str, str] | None = None,
        dtype: Any = None,
        device_map: Any = None,
        **kwargs: Any,
    ) -> NERExtractor:
        """An extractor from a base model (Hub id, local path, or the default ``smollm2-135m-instruct``) or
        from a saved CLLMFS adapter folder / Hub repo (its entity types, descriptions and type names are then
        read from its ``cllmfs_config.json``; ``entity_types``/``descriptions`` given here override them).

        Other keyword arguments go to :class:`NERExtractor` (``constraint``, ``max_context``, ...).

        Example:
            >>> NERExtractor.from_pretrained("outputs/politics-adapter").entity_types  # doctest: +SKIP
            ['country', 'election', 'event', 'location', 'misc', 'organisation', 'person', ...]
        """
        from .hub import is_adapter_folder, load_adapter
        from .models import DEFAULT_MODEL, load_base_model, load_tokenizer

        name_or_path = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
        if is_adapter_folder(name_or_path):
            model, tokenizer, ner_config = load_adapter(name_or_path, dtype=dtype, device_map=device_map)
            types = list(entity_types) if entity_types is not None else list(ner_config.entity_types)
            descr = {**dict(ner_config.type_descriptions), **dict(descriptions or {})}
            kwargs.setdefault("type_names", dict(ner_config.type_names))
            tokenizer.padding_side = "left"
        else:
            model = load_base_model(name_or_path, dtype=dtype, device_map=device_map)
            tokenizer = load_tokenizer(name_or_path, padding_side="left")
            types = list(entity_types) if entity_types is not None else None
            descr = dict(descriptions or {})
        model.eval()
        return cls(model, tokenizer, types, descr, **kwargs)

    # -- validation -----------------------------------------------------------------------------------
    @staticmethod
    def _check_types(types: Any, name: str) -> list[str]:
        if isinstance(types, str):
            raise TypeError(f"{name} must be a list of labels, got the string {types!r}: pass [{types!r}].")
        try:
            types = list(types)
        except TypeError:
            raise TypeError(f"{name} must be a list of labels, got {type(types).__name__}.") from None
        if not types:
            raise ValueError(f"{name} is empty: pass at least one entity type, e.g. ['person', 'location'].")
        out: list[str] = []
        for i, t in enumerate(types):
            if not isinstance(t, str):
                raise TypeError(f"{name}[{i}] must be a str label, got {type(t).__name__} {t!r}.")
            if not t.strip():
                raise ValueError(f"{name}[{i}] is an empty label: remove it or give the type's name.")
            if t not in out:
                out.append(t)
        return out

    def _resolve_types(self, entity_types: Sequence[str] | None, allow_unknown: bool) -> list[str]:
        if entity_types is None:
            if self.entity_types is None:
                raise ValueError(
                    "No entity types: pass entity_types=[...] to predict, or construct NERExtractor with "
                    "entity_types (an adapter folder brings its own)."
                )
            return list(self.entity_types)
        types = self._check_types(entity_types, "entity_types")
        if self.entity_types is not None and not allow_unknown:
            unknown = [t for t in types if t not in self.entity_types]
            if unknown:
                raise ValueError(
                    f"Unknown entity type(s) {unknown}: this extractor knows {self.entity_types}. Pass "
                    "allow_unknown_types=True to query other types anyway (zero-shot)."
                )
        return types

    @staticmethod
    def _check_texts(texts: Any) -> list[str]:
        if isinstance(texts, str):
            raise TypeError(
                "texts must be a list of strings, got one string: call predict([text]) for one text."
            )
        try:
            texts = list(texts)
        except TypeError:
            raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}.") from None
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__} {t!r:.60}.")
        return texts

    # -- prompts and windows ----------------------------------------------------------------------------
    def _type_name(self, label: str) -> str:
        return self.type_names.get(label) or type_name(label)

    def _prompt_ids(self, label: str, sentence: str) -> list[int]:
        messages = prompt_messages(self._type_name(label), describe_type(label, self.descriptions), sentence)
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _auto_new_tokens(self, sentence_tokens: int) -> int:
        """The default generation cap: the preamble, then room for about two tokens per input token."""
        return self._preamble_tokens + 8 + 2 * sentence_tokens

    def _window_budget(self, labels: Sequence[str], max_new_tokens: int | None) -> int:
        overhead = 0
        for label in labels:
            if label not in self._overhead:
                self._overhead[label] = len(self._prompt_ids(label, "")) + 4
            overhead = max(overhead, self._overhead[label])
        room = self.max_context - overhead
        if max_new_tokens is not None:
            budget = room - max_new_tokens
        else:
            budget = (room - self._preamble_tokens - 8) // 3
        if budget < 8:
            raise ValueError(
                f"The context of {self.max_context} tokens leaves {budget} tokens for the text after the prompt "
                f"({overhead} tokens) and the answer: lower max_new_tokens or raise max_context."
            )
        return budget

    def _windows(self, text: str, budget: int) -> list[tuple[int, int]]:
        """Character windows ``[(start, end)]`` of at most ``budget`` tokens, overlapping, at word boundaries."""
        if self._count_tokens(text) <= budget:
            return [(0, len(text))]
        pieces: list[tuple[int, int]] = []
        words = [(m.start(), m.end()) for m in _WORD_RE.finditer(text)]
        counts = [
            len(ids)
            for ids in self.tokenizer([" " + text[s:e] for s, e in words], add_special_tokens=False)[
                "input_ids"
            ]
        ]
        for (s, e), c in zip(words, counts):
            if c <= budget:
                pieces.append((s, e))
                continue
            # a single "word" longer than a window (a URL, a table row): cut it into chunks that fit
            step = max(1, (e - s) * budget // (c + 1))
            pos = s
            while pos < e:
                end = min(e, pos + step)
                while end - pos > 1 and self._count_tokens(" " + text[pos:end]) > budget:
                    end = pos + max(1, (end - pos) // 2)
                pieces.append((pos, end))
                pos = end
        piece_tokens = [self._count_tokens(" " + text[s:e]) for s, e in pieces]
        windows: list[tuple[int, int]] = []
        i = 0
        while i < len(pieces):
            j, total = i, 0
            while j < len(pieces) and total + piece_tokens[j] <= budget:
                total += piece_tokens[j]
                j += 1
            j = max(j, i + 1)
            # exact check (merges across word boundaries can change the count slightly)
            while j > i + 1 and self._count_tokens(text[pieces[i][0] : pieces[j - 1][1]]) > budget:
                j -= 1
            windows.append((pieces[i][0], pieces[j - 1][1]))
            if j >= len(pieces):
                break
            # next window starts so that about window_overlap tokens are shared
            k, shared = j, 0
            while k - 1 > i and shared + piece_tokens[k - 1] <= self.window_overlap:
                shared += piece_tokens[k - 1]
                k -= 1
            i = max(k, i + 1)
        return windows

    # -- generation ---------------------------------------------------------------------------------------
    def _label_prefix(self, label: str) -> tuple[list[int], Any] | None:
        """The token prefix every prompt of ``label`` starts with, and its key/value cache (batch 1)."""
        a = self._prompt_ids(label, "Alpha beta .")
        b = self._prompt_ids(label, "Gamma")
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        if n < 8:
            return None
        ids = a[:n]
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids], device=self._device()), use_cache=True)
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return None
        return ids, cache

    def _verify_prefix(self, record: _Record, prefix: tuple[list[int], Any]) -> bool:
        """Once per extractor: the cached prefix gives the same next-token logits as a plain forward."""
        if self._prefix_verified is None:
            ids, cache = prefix
            device = self._device()
            full = torch.tensor([record.prompt_ids], device=device)
            suffix = full[:, len(ids) :]
            with torch.inference_mode():
                plain = self.model(input_ids=full).logits[0, -1].float()
                cached = (
                    self.model(
                        input_ids=suffix,
                        attention_mask=torch.ones_like(full),
                        position_ids=torch.arange(len(ids), full.shape[1], device=device)[None],
                        cache=copy.deepcopy(cache),
                    )
                    .logits[0, -1]
                    .float()
                )
            scale = plain.abs().max().clamp(min=1.0)
            self._prefix_verified = bool(((plain - cached).abs().max() / scale) < 1e-3)
            if not self._prefix_verified:
                logger.warning(
                    "Prefix caching changes this model's logits; NERExtractor switches it off (prefix_cache=False)."
                )
        return self._prefix_verified

    def _device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device("cpu")

    def _generate_batch(
        self,
        batch: list[_Record],
        *,
        constrained: bool,
        max_new_tokens: int | None,
        generate_kwargs: dict[str, Any],
        stats: PredictionStats,
        prefix: tuple[list[int], Any] | None = None,
    ) -> list[list[tuple[int, int]]]:
        kwargs = dict(generate_kwargs)
        n = len(prefix[0]) if prefix is not None else 0
        if prefix is not None and not all(
            len(r.prompt_ids) > n and r.prompt_ids[:n] == prefix[0] and r.label == batch[0].label
            for r in batch
        ):
            n, prefix = 0, None
        if prefix is not None and not self._verify_prefix(batch[0], prefix):
            n, prefix = 0, None
        # layout: [shared prefix][left padding][rest of the prompt]; positions follow the attention mask
        width = n + max(len(r.prompt_ids) - n for r in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            rest = r.prompt_ids[n:]
            input_ids[i, width - len(rest) :] = torch.tensor(rest)
            attention[i, width - len(rest) :] = 1
            if n:
                input_ids[i, :n] = torch.tensor(prefix[0])
                attention[i, :n] = 1
        if prefix is not None:
            beams = kwargs.get("num_beams") or getattr(self.model.generation_config, "num_beams", 1) or 1
            cache = copy.deepcopy(prefix[1])
            cache.batch_repeat_interleave(len(batch) * int(beams))
            kwargs["cache"] = cache
        cap = max_new_tokens or max(self._auto_new_tokens(r.sentence_tokens) for r in batch)
        processors = LogitsProcessorList()
        proc = None
        if constrained:
            proc = SpanConstrainedLogitsProcessor(
                self.tokenizer, [r.sentence for r in batch], self.constraint, eos_token_id=self.eos_token_ids
            )
            processors.append(proc)
        user_processors = kwargs.pop("logits_processor", None)
        if user_processors:
            processors.extend(user_processors)
        kwargs.setdefault("do_sample", False)
        if kwargs.get("num_return_sequences", 1) != 1:
            raise ValueError("num_return_sequences must be 1 in predict (one answer per record).")
        device = self._device()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                logits_processor=processors,
                max_new_tokens=cap,
                eos_token_id=self.eos_token_ids,
                pad_token_id=self.pad_token_id,
                **kwargs,
            )
        generated = out[:, width:].tolist()
        eos = set(self.eos_token_ids)
        results: list[list[tuple[int, int]]] = []
        for r, row in zip(batch, generated):
            end = next((i for i, t in enumerate(row) if t in eos), None)
            ended = end is not None
            ids = row[:end] if ended else row
            stats.generated_tokens += len(ids) + int(ended)
            text = self.trie.decode(ids)
            parsed = parse_output(
                text, r.sentence, word_boundaries=self.constraint.word_boundaries, complete=ended
            )
            stats.truncated += int(not ended)
            stats.dropped_not_in_input += parsed.dropped_not_in_input
            stats.dropped_repeats += parsed.dropped_repeats
            stats.malformed += int(not parsed.well_formed)
            results.append(parsed.spans)
        return results

    # -- public API -----------------------------------------------------------------------------------------
    def predict(
        self,
        texts: Sequence[str],
        entity_types: Sequence[str] | None = None,
        *,
        batch_size: int = 16,
        max_new_tokens: int | None = None,
        constrained: bool = True,
        progress: bool | None = None,
        allow_unknown_types: bool = False,
        **generate_kwargs: Any,
    ) -> list[list[dict[str, Any]]]:
        """Entities of each text: one list per text of ``{"start", "end", "text", "label"}`` dicts, sorted by
        position (``text[start:end] == text`` field, character offsets).

        Args:
            texts: the input texts (a list of str; empty or whitespace-only texts give ``[]``).
            entity_types: labels to extract (default: the extractor's ``entity_types``).
            batch_size: records (text x type) per ``generate`` call.
            max_new_tokens: answer cap per record (default: the preamble + 8 + 2 tokens per input token);
                records that reach it are counted in ``last_stats.truncated``.
            constrained: span-constrained decoding (default). ``False`` decodes freely; spans not in the text
                are dropped and counted in ``last_stats.dropped_not_in_input``.
            progress: show a tqdm progress bar (default: when there are more than ``progress_threshold`` records).
            allow_unknown_types: query types the extractor was not configured for.
            **generate_kwargs: passed to ``model.generate`` (``num_beams``, ``do_sample``, ``temperature``,
                ``top_p``, extra ``logits_processor``...); decoding is greedy by default.

        Example:
            >>> extractor.predict(["Ada met Bob ."], ["person"])  # doctest: +SKIP
            [[{'start': 0, 'end': 3, 'text': 'Ada', 'label': 'person'}, {'start': 8, ...}]]
        """
        texts = self._check_texts(texts)
        types = self._resolve_types(entity_types, allow_unknown_types)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or max_new_tokens < 1):
            raise ValueError(f"max_new_tokens must be None or an integer >= 1, got {max_new_tokens!r}.")
        start_time = time.perf_counter()
        stats = PredictionStats(texts=len(texts))
        budget = self._window_budget(types, max_new_tokens)

        records: list[_Record] = []
        windows_of: list[list[tuple[int, int]]] = []
        for ti, text in enumerate(texts):
            if not text.strip():
                stats.empty_texts += 1
                windows_of.append([])
                continue
            windows = self._windows(text, budget)
            windows_of.append(windows)
            stats.windows += len(windows)
            stats.split_texts += int(len(windows) > 1)
            for wi, (ws, we) in enumerate(windows):
                sentence = text[ws:we]
                n_tokens = self._count_tokens(sentence)
                for label in types:
                    prompt = self._prompt_ids(label, sentence)
                    records.append(_Record(ti, wi, label, sentence, ws, prompt, n_tokens))
        stats.records = len(records)

        # batches hold one type each (its prompts share a prefix), longest prompts first (least padding)
        type_rank = {t: i for i, t in enumerate(types)}
        order = sorted(
            range(len(records)), key=lambda i: (type_rank[records[i].label], -len(records[i].prompt_ids))
        )
        batches: list[list[_Record]] = []
        for i in order:
            r = records[i]
            if batches and len(batches[-1]) < batch_size and batches[-1][0].label == r.label:
                batches[-1].append(r)
            else:
                batches.append([r])
        prefixes: dict[str, tuple[list[int], Any] | None] = {}
        found: list[list[tuple[int, int, str, int]]] = [[] for _ in texts]  # (start, end, label, window)
        show = progress if progress is not None else len(records) > self.progress_threshold
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(records), desc="NER records", unit="rec")
        try:
            for batch in batches:
                label = batch[0].label
                if self.prefix_cache and self._prefix_verified is not False and label not in prefixes:
                    prefixes[label] = self._label_prefix(label)
                spans = self._generate_batch(
                    batch,
                    constrained=constrained,
                    max_new_tokens=max_new_tokens,
                    generate_kwargs=generate_kwargs,
                    stats=stats,
                    prefix=prefixes.get(label) if self.prefix_cache else None,
                )
                stats.batches += 1
                for r, row_spans in zip(batch, spans):
                    for s, e in row_spans:
                        found[r.text_index].append((s + r.offset, e + r.offset, r.label, r.window))
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()

        results: list[list[dict[str, Any]]] = []
        for ti, text in enumerate(texts):
            mentions = self._merge_windows(found[ti], windows_of[ti], len(text))
            if self.overlap_policy == "longest":
                mentions = self._resolve_overlaps(mentions, types)
            order_of = {t: i for i, t in enumerate(types)}
            mentions.sort(key=lambda m: (m[0], m[1], order_of.get(m[2], len(types))))
            results.append(
                [{"start": s, "end": e, "text": text[s:e], "label": label} for s, e, label in mentions]
            )
        stats.seconds = time.perf_counter() - start_time
        self.last_stats = stats
        if stats.truncated:
            warnings.warn(
                f"{stats.truncated} of {stats.records} answers reached max_new_tokens before ending; their complete "
                "mentions are kept. Raise max_new_tokens, or limit spans (constraint=SpanConstraintConfig("
                "max_spans=...)).",
                RuntimeWarning,
                stacklevel=2,
            )
        if stats.dropped_not_in_input or stats.dropped_repeats:
            logger.info(
                "Dropped %d generated spans not found in their text and %d repeats beyond their occurrences.",
                stats.dropped_not_in_input,
                stats.dropped_repeats,
            )
        return results

    @staticmethod
    def _merge_windows(
        found: list[tuple[int, int, str, int]], windows: list[tuple[int, int]], length: int
    ) -> list[tuple[int, int, str]]:
        if len(windows) <= 1:
            return sorted({(s, e, label) for s, e, label, _ in found})
        candidates: list[tuple[int, int, int, str]] = []  # (-margin, start, end, label)
        for s, e, label, w in found:
            ws, we = windows[w]
            if (s == ws and ws > 0) or (e == we and we < length):
                continue  # touches a cut edge: the overlapping neighbour sees this mention whole
            candidates.append(
                (-min(s - ws if ws > 0 else length, we - e if we < length else length), s, e, label)
            )
        kept: list[tuple[int, int, str]] = []
        for _, s, e, label in sorted(candidates):
            if (s, e, label) in kept:
                continue
            if any(label == kl and s < ke and ks < e for ks, ke, kl in kept):
                continue
            kept.append((s, e, label))
        return kept

    @staticmethod
    def _resolve_overlaps(
        mentions: list[tuple[int, int, str]], types: list[str]
    ) -> list[tuple[int, int, str]]:
        rank = {t: i for i, t in enumerate(types)}
        kept: list[tuple[int, int, str]] = []
        for s, e, label in sorted(mentions, key=lambda m: (-(m[1] - m[0]), rank.get(m[2], len(types)), m[0])):
            if all(e <= ks or ke <= s for ks, ke, _ in kept):
                kept.append((s, e, label))
        return kept

    def predict_mentions(
        self, texts: Sequence[str], entity_types: Sequence[str] | None = None, **kwargs: Any
    ) -> list[list[Mention]]:
        """Like :meth:`predict`, as :class:`~cllmfs_hf.data.types.Mention` objects (for evaluation)."""
        return [
            [Mention(m["start"], m["end"], m["label"]) for m in mentions]
            for mentions in self.predict(texts, entity_types, **kwargs)
        ]

    @staticmethod
    def _as_sentences(data: Any) -> list[AnnotatedSentence]:
        if hasattr(data, "column_names") and hasattr(data, "features"):
            return dataset_to_sentences(data)
        if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
            raise TypeError(
                "evaluate needs annotated sentences: a list of AnnotatedSentence (cllmfs_hf.data.readers."
                "read_dataset(path)) or a datasets.Dataset from sentences_to_dataset."
            )
        sentences = list(data)
        for i, s in enumerate(sentences):
            if not isinstance(s, AnnotatedSentence):
                raise TypeError(f"item {i} is a {type(s).__name__}, not an AnnotatedSentence.")
        return sentences

    def score(
        self, sentences_or_dataset: Any, entity_types: Sequence[str] | None = None, **predict_kwargs: Any
    ) -> ScoreAccumulator:
        """Predict on annotated sentences and return the counts as a
        :class:`~cllmfs_hf.evaluation.ScoreAccumulator` (merge several, e.g. episodes, then ``.result()``).

        ``entity_types`` defaults to the extractor's types, else the labels present in the sentences.
        """
        sentences = self._as_sentences(sentences_or_dataset)
        types = entity_types
        if types is None:
            types = self.entity_types if self.entity_types is not None else label_set(sentences)
        predicted = (
            self.predict_mentions([s.text for s in sentences], types, **predict_kwargs) if sentences else []
        )
        acc = ScoreAccumulator()
        for i, (sentence, mentions) in enumerate(zip(sentences, predicted)):
            acc.add(sentence.mentions, mentions, sentence_index=i, source=sentence.source)
        return acc

    def evaluate(
        self, sentences_or_dataset: Any, entity_types: Sequence[str] | None = None, **predict_kwargs: Any
    ) -> NERScores:
        """Entity-level micro P/R/F1 with per-type scores (:mod:`cllmfs_hf.evaluation`) of predictions on
        annotated sentences (a list of ``AnnotatedSentence`` or a ``datasets.Dataset``). Gold mentions of
        types that are not queried count as misses.

        Example:
            >>> scores = extractor.evaluate(read_dataset("test.txt"), batch_size=32)  # doctest: +SKIP
            >>> print(scores)  # doctest: +SKIP
        """
        return self.score(sentences_or_dataset, entity_types, **predict_kwargs).result()
