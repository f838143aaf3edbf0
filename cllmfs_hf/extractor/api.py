"""``NERExtractor``: the extraction API (``predict``, ``predict_mentions``) and its scoring (``score``,
``evaluate``) on annotated sentences.

How ``predict`` runs, the window and overlap policies and the bad-input rules are described in the package
docstring (:mod:`cllmfs_hf.extractor`); the pieces it uses live in the sibling modules.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from ..data.descriptions import describe_type
from ..data.labels import type_name
from ..data.records import label_set
from ..data.types import Mention
from ..decoding import SpanConstraintConfig, VocabularyTrie
from ..evaluation import NERScores, ScoreAccumulator
from ..template import PREAMBLE, prompt_messages
from .corpus import CorpusSummary
from .corpus import predict_file as predict_corpus
from .generation import _Record, generate_batch, plan_batches, stream_spans
from .greedy import plain_greedy
from .lora_merge import lora_merged, merge_lora_for_inference
from .prefix_cache import encode_prefix, prefix_agrees, prefix_fits
from .scoring import choose_threshold
from .stats import PredictionStats
from .validation import (
    as_sentences,
    check_texts,
    check_types,
    resolve_max_context,
    resolve_types,
    special_token_ids,
)
from .windows import count_tokens, merge_windows, split_windows

__all__ = ["NERExtractor", "OverlapPolicy"]

logger = logging.getLogger(__package__)  # "cllmfs_hf.extractor", as before the split

OverlapPolicy = Literal["keep_all", "longest"]


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
        overlap_policy: ``"keep_all"`` or ``"longest"`` (package docstring).
        progress_threshold: show a progress bar when a call has more records than this.
        prefix_cache: compute the key/value cache of the prompt part shared by all records of a type (chat
            template, system prompt, instruction) once per type and call, instead of once per record. It is
            checked once against a plain forward (logits must agree) and switched off if they do not.
        prefill_preamble: end every prompt with the answer's fixed preamble, so that it is encoded in the
            prompt's one forward pass and generation starts after it (``constraint.preamble_in_prompt`` is set
            from this). It is the text every legal answer starts with and the tokens training put there;
            False generates it token by token (about 12 decoding steps more per record).
        drop_finished_rows: in plain greedy search (the default decoding), batch continuously
            (:mod:`.greedy`): each record leaves the batch once its answer has ended and waiting records take
            its row, so the batch stays full and no step is spent on ended rows; each record has its own cap.
            The same answers as ``model.generate`` on batches that keep every row until the longest answer
            ends (False; sampling and beam search always go through ``generate``).

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
        prefill_preamble: bool = True,
        drop_finished_rows: bool = True,
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
        self.entity_types = check_types(entity_types, "entity_types") if entity_types is not None else None
        self.descriptions = dict(descriptions or {})
        self.type_names = dict(type_names or {})
        constraint = constraint or SpanConstraintConfig()
        if not isinstance(constraint, SpanConstraintConfig):
            raise TypeError("constraint must be a cllmfs_hf.decoding.SpanConstraintConfig.")
        if not isinstance(prefill_preamble, bool):
            raise ValueError(f"prefill_preamble must be True or False, got {prefill_preamble!r}.")
        self.prefill_preamble = prefill_preamble
        if not isinstance(drop_finished_rows, bool):
            raise ValueError(f"drop_finished_rows must be True or False, got {drop_finished_rows!r}.")
        self.drop_finished_rows = drop_finished_rows
        # The extractor writes the prompts, so it alone says whether they end with the preamble.
        self.constraint = dataclasses.replace(constraint, preamble_in_prompt=prefill_preamble)
        self.max_context = resolve_max_context(model, tokenizer, max_context)
        if not isinstance(window_overlap, int) or isinstance(window_overlap, bool) or window_overlap < 1:
            raise ValueError(
                f"window_overlap must be an integer >= 1 (tokens), got {window_overlap!r}: without an overlap a "
                "mention cut by a window edge is lost."
            )
        self.window_overlap = window_overlap
        if overlap_policy not in ("keep_all", "longest"):
            raise ValueError(f"overlap_policy must be 'keep_all' or 'longest', got {overlap_policy!r}.")
        self.overlap_policy = overlap_policy
        self.progress_threshold = progress_threshold
        if not isinstance(prefix_cache, bool):
            raise ValueError(f"prefix_cache must be True or False, got {prefix_cache!r}.")
        self.prefix_cache = prefix_cache
        self._prefix_verified: bool | None = None
        self.pad_token_id, self.eos_token_ids = special_token_ids(model, tokenizer)
        self.trie = VocabularyTrie.for_tokenizer(tokenizer)
        # Tokens of the answer's preamble that generation produces (none when the prompt ends with it).
        self._preamble_tokens = (
            0 if prefill_preamble else len(tokenizer(PREAMBLE, add_special_tokens=False)["input_ids"])
        )
        self._overhead: dict[str, int] = {}
        self.last_stats = PredictionStats()
        #: The model's name or path when built by from_pretrained (recorded by predict_file).
        self.name_or_path: str | None = None

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
        base_model: str | None = None,
        **kwargs: Any,
    ) -> NERExtractor:
        """An extractor from a base model (Hub id, local path, or the default ``smollm2-135m-instruct``), from
        the general NER adapter shipped with the package (``"general-ner"``, offline) or from a saved CLLMFS
        adapter folder / Hub repo (its entity types, descriptions and type names are then
        read from its ``cllmfs_config.json``; ``entity_types``/``descriptions`` given here override them). A
        plain PEFT adapter (no ``cllmfs_config.json``) needs ``entity_types``. ``base_model`` overrides an
        adapter's recorded base (a moved local path, or a Hub id that is not cached offline).

        An adapter's LoRA weights are merged into the base weights (the model is loaded to extract, and runs as a
        plain model); use :func:`cllmfs_hf.hub.load_adapter` to keep the ``PeftModel``.

        Other keyword arguments go to :class:`NERExtractor` (``constraint``, ``max_context``, ...).

        Example:
            >>> NERExtractor.from_pretrained("general-ner").predict("Marie Curie worked in Paris.")  # doctest: +SKIP
            >>> NERExtractor.from_pretrained("outputs/politics-adapter").entity_types  # doctest: +SKIP
            ['country', 'election', 'event', 'location', 'misc', 'organisation', 'person', ...]
        """
        from ..hub import is_adapter_folder, load_adapter
        from ..models import DEFAULT_MODEL, load_base_model, load_tokenizer

        name_or_path = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
        if is_adapter_folder(name_or_path):
            model, tokenizer, ner_config = load_adapter(
                name_or_path,
                dtype=dtype,
                device_map=device_map,
                base_model=base_model,
                entity_types=entity_types,
            )
            # loaded to extract: the LoRA deltas go into the base weights once (a plain model at every call)
            model = merge_lora_for_inference(model)
            types = list(entity_types) if entity_types is not None else list(ner_config.entity_types)
            descr = {**dict(ner_config.type_descriptions), **dict(descriptions or {})}
            kwargs.setdefault("type_names", dict(ner_config.type_names))
            tokenizer.padding_side = "left"
        else:
            if base_model is not None:
                raise ValueError(
                    f"base_model= overrides an adapter's base, but {name_or_path!r} is not an adapter folder: "
                    "pass the base model itself as name_or_path."
                )
            model = load_base_model(name_or_path, dtype=dtype, device_map=device_map)
            tokenizer = load_tokenizer(name_or_path, padding_side="left")
            types = list(entity_types) if entity_types is not None else None
            descr = dict(descriptions or {})
        model.eval()
        extractor = cls(model, tokenizer, types, descr, **kwargs)
        extractor.name_or_path = name_or_path  # what predict_file records as the model
        return extractor

    # -- prompts and windows ----------------------------------------------------------------------------
    def _type_name(self, label: str) -> str:
        return self.type_names.get(label) or type_name(label)

    def _prompt_ids(self, label: str, sentence: str) -> list[int]:
        messages = prompt_messages(self._type_name(label), describe_type(label, self.descriptions), sentence)
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if self.prefill_preamble:
            # Tokenized with the prompt, as training tokenized prompt + completion as one text.
            text += PREAMBLE
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

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
        return split_windows(self.tokenizer, text, budget, self.window_overlap)

    # -- generation ---------------------------------------------------------------------------------------
    def _label_prefix(self, label: str) -> tuple[list[int], Any] | None:
        """The token prefix every prompt of ``label`` starts with, and its key/value cache (batch 1)."""
        a = self._prompt_ids(label, "Alpha beta .")
        b = self._prompt_ids(label, "Gamma")
        return encode_prefix(self.model, a, b, self._device())

    def _verify_prefix(self, record: _Record, prefix: tuple[list[int], Any]) -> bool:
        """Once per extractor: the cached prefix gives the same next-token logits as a plain forward."""
        if self._prefix_verified is None:
            self._prefix_verified = prefix_agrees(self.model, record.prompt_ids, prefix, self._device())
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

    def _record_prefix(
        self, r: _Record, prefixes: dict[str, tuple[list[int], Any] | None]
    ) -> tuple[list[int], Any] | None:
        """The checked prefix cache of record ``r``'s type (computed once per type and call), or None."""
        if not self.prefix_cache or self._prefix_verified is False:
            return None
        if r.label not in prefixes:
            prefixes[r.label] = self._label_prefix(r.label)
        prefix = prefixes[r.label]
        if prefix is None or not (prefix_fits([r.prompt_ids], prefix[0]) and self._verify_prefix(r, prefix)):
            return None
        return prefix

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
        threshold: float | None = None,
        **generate_kwargs: Any,
    ) -> list[list[dict[str, Any]]]:
        """Entities of each text: one list per text of ``{"start", "end", "text", "label", "score"}`` dicts,
        sorted by position (``text[start:end] == text`` field, character offsets). ``score`` is the model's
        probability of generating the mention's item `` <<< span >>>`` given the prompt and the answer before
        it (read from the decoding's own logits; None for free text that left the template).

        Args:
            texts: the input texts (a list of str; empty or whitespace-only texts give ``[]``).
            entity_types: labels to extract (default: the extractor's ``entity_types``).
            batch_size: records (text x type) decoded at once (the rows of the continuous batch, or of each
                ``generate`` call).
            max_new_tokens: answer cap per record (default: the preamble + 8 + 2 tokens per input token);
                records that reach it are counted in ``last_stats.truncated``.
            constrained: span-constrained decoding (default). ``False`` decodes freely; spans not in the text
                are dropped and counted in ``last_stats.dropped_not_in_input``.
            progress: show a tqdm progress bar (default: when there are more than ``progress_threshold`` records).
            allow_unknown_types: query types the extractor was not configured for.
            threshold: drop mentions whose score is below it (see :meth:`choose_threshold`).
            **generate_kwargs: passed to ``model.generate`` (``num_beams``, ``do_sample``, ``temperature``,
                ``top_p``, extra ``logits_processor``...); decoding is greedy by default.

        Example:
            >>> extractor.predict(["Ada met Bob ."], ["person"])  # doctest: +SKIP
            [[{'start': 0, 'end': 3, 'text': 'Ada', 'label': 'person'}, {'start': 8, ...}]]
        """
        texts = check_texts(texts)
        types = resolve_types(entity_types, self.entity_types, allow_unknown_types)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or max_new_tokens < 1):
            raise ValueError(f"max_new_tokens must be None or an integer >= 1, got {max_new_tokens!r}.")
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0.0 <= threshold <= 1.0
        ):
            raise ValueError(f"threshold must be None or a probability in [0, 1], got {threshold!r}.")
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

        batches = plan_batches(records, types, batch_size)
        prefixes: dict[str, tuple[list[int], Any] | None] = {}
        found: list[list[tuple[int, int, str, int]]] = [[] for _ in texts]  # (start, end, label, window)
        # the best score of each (start, end, label) of a text (a mention may come from two windows)
        scores_of: list[dict[tuple[int, int, str], float | None]] = [{} for _ in texts]
        show = progress if progress is not None else len(records) > self.progress_threshold
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(records), desc="NER records", unit="rec")

        def collect(r: _Record, row_spans: list[tuple[int, int, float | None]]) -> None:
            for s, e, score in row_spans:
                key = (s + r.offset, e + r.offset, r.label)
                found[r.text_index].append((*key, r.window))
                best = scores_of[r.text_index].get(key)
                if score is not None and (best is None or score > best):
                    scores_of[r.text_index][key] = score
                else:
                    scores_of[r.text_index].setdefault(key, best)

        try:
            with lora_merged(self.model):  # no LoRA matmuls per step
                if self.drop_finished_rows and plain_greedy(self.model, generate_kwargs):
                    # continuous batching: records leave at their end, waiting ones take their rows
                    ordered = [r for batch in batches for r in batch]
                    for r, row_spans in stream_spans(
                        self.model,
                        self.tokenizer,
                        ordered,
                        [self._record_prefix(r, prefixes) for r in ordered],
                        [max_new_tokens or self._auto_new_tokens(r.sentence_tokens) for r in ordered],
                        batch_size=batch_size,
                        constrained=constrained,
                        constraint=self.constraint,
                        pad_token_id=self.pad_token_id,
                        eos_token_ids=self.eos_token_ids,
                        trie=self.trie,
                        device=self._device(),
                        stats=stats,
                    ):
                        collect(r, row_spans)
                        if bar is not None:
                            bar.update(1)
                else:
                    for batch in batches:  # batches are of one type: one prefix, if every prompt fits it
                        fitting = [self._record_prefix(r, prefixes) for r in batch]
                        spans = generate_batch(
                            self.model,
                            self.tokenizer,
                            batch,
                            prefix=fitting[0] if all(p is fitting[0] for p in fitting) else None,
                            constrained=constrained,
                            constraint=self.constraint,
                            cap=max_new_tokens
                            or max(self._auto_new_tokens(r.sentence_tokens) for r in batch),
                            pad_token_id=self.pad_token_id,
                            eos_token_ids=self.eos_token_ids,
                            trie=self.trie,
                            device=self._device(),
                            generate_kwargs=generate_kwargs,
                            stats=stats,
                        )
                        stats.batches += 1
                        for r, row_spans in zip(batch, spans):
                            collect(r, row_spans)
                        if bar is not None:
                            bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()

        results: list[list[dict[str, Any]]] = []
        for ti, text in enumerate(texts):
            mentions = merge_windows(found[ti], windows_of[ti], len(text))
            if self.overlap_policy == "longest":
                mentions = self._resolve_overlaps(mentions, types)
            order_of = {t: i for i, t in enumerate(types)}
            mentions.sort(key=lambda m: (m[0], m[1], order_of.get(m[2], len(types))))
            entities = []
            for s, e, label in mentions:
                score = scores_of[ti].get((s, e, label))
                if threshold is not None and score is not None and score < threshold:
                    continue
                entities.append({"start": s, "end": e, "text": text[s:e], "label": label, "score": score})
            results.append(entities)
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
    def _resolve_overlaps(
        mentions: list[tuple[int, int, str]], types: list[str]
    ) -> list[tuple[int, int, str]]:
        rank = {t: i for i, t in enumerate(types)}
        kept: list[tuple[int, int, str]] = []
        for s, e, label in sorted(mentions, key=lambda m: (-(m[1] - m[0]), rank.get(m[2], len(types)), m[0])):
            if all(e <= ks or ke <= s for ks, ke, _ in kept):
                kept.append((s, e, label))
        return kept

    def predict_file(
        self,
        input_file: str,
        output_file: str,
        entity_types: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> CorpusSummary:
        """Predict a whole corpus file (JSON lines or plain text) into a JSON-lines file: streamed, resumable
        after a crash, one shard per process under ``accelerate launch``; see :mod:`cllmfs_hf.extractor.corpus`
        for the formats and :func:`~cllmfs_hf.extractor.corpus.predict_file` for the options.

        Example:
            >>> extractor.predict_file("texts.jsonl", "entities.jsonl")  # doctest: +SKIP
            CorpusSummary(output_file='entities.jsonl', lines=1000, predicted=1000, ...)
        """
        kwargs.setdefault("model_name", self.name_or_path)
        return predict_corpus(self, input_file, output_file, entity_types, **kwargs)

    def choose_threshold(
        self, sentences: Any, entity_types: Sequence[str] | None = None, **predict_kwargs: Any
    ) -> tuple[float, float]:
        """``(threshold, f1)``: the score threshold with the best micro F1 on labelled ``sentences`` (the
        support set or a dev split); see :func:`cllmfs_hf.extractor.scoring.choose_threshold`."""
        return choose_threshold(self, sentences, entity_types, **predict_kwargs)

    def predict_mentions(
        self, texts: Sequence[str], entity_types: Sequence[str] | None = None, **kwargs: Any
    ) -> list[list[Mention]]:
        """Like :meth:`predict`, as :class:`~cllmfs_hf.data.types.Mention` objects (for evaluation)."""
        return [
            [Mention(m["start"], m["end"], m["label"]) for m in mentions]
            for mentions in self.predict(texts, entity_types, **kwargs)
        ]

    def score(
        self, sentences_or_dataset: Any, entity_types: Sequence[str] | None = None, **predict_kwargs: Any
    ) -> ScoreAccumulator:
        """Predict on annotated sentences and return the counts as a
        :class:`~cllmfs_hf.evaluation.ScoreAccumulator` (merge several, e.g. episodes, then ``.result()``).

        ``entity_types`` defaults to the extractor's types, else the labels present in the sentences.
        """
        sentences = as_sentences(sentences_or_dataset)
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
