"""The logits processor that only lets the model copy spans of its input.

:class:`SpanConstrainedLogitsProcessor` masks, at every step and for every row, each next token that cannot
continue a legal output (see :mod:`.automaton`). A row's state follows from its own last state when no row
was reordered (greedy search, sampling), else it is keyed by its generated prefix (beam search reorders rows
between steps); the set of allowed ids of a state is computed once (memoised, in the row's
:class:`~.automaton.RowAutomaton`) and the masking itself is one gather and one scatter of the allowed scores
into a reused ``(rows, vocab)`` buffer of -inf, which is reset only where the call before wrote, so the cost
per row does not grow with the vocabulary.
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import torch
from transformers import LogitsProcessor

from ..template import PREAMBLE
from .automaton import RowAutomaton, State
from .config import SpanConstraintConfig
from .vocabulary import VocabularyTrie

__all__ = ["SpanConstrainedLogitsProcessor"]

#: The state of a row that emitted EOS (its output is complete; None is a row left unconstrained).
_ENDED: State = frozenset(["<end of output>"])


def _clocked(method: Callable) -> Callable:
    """Adds the time a call of ``method`` takes to the processor's ``seconds``."""

    @functools.wraps(method)
    def clocked(self: SpanConstrainedLogitsProcessor, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    return clocked


def _check_sentences(sentences: Sequence[str]) -> None:
    """Every input sentence is a str (the constructor's and add_rows' check)."""
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"sentences[{i}] must be a str, got {type(s).__name__}.")


class _MaskBuffer:
    """An output tensor of the processor, -inf except where the last call that used it wrote."""

    __slots__ = ("data", "view", "dirty", "dirty_rows")

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        self.view = data  # the tensor handed to the caller: ``data`` or its first rows
        # flat indices written (into ``data``: the view's rows are its first ones)
        self.dirty: torch.Tensor | None = None
        self.dirty_rows: torch.Tensor | None = None  # whole rows copied (unconstrained rows)

    def released(self) -> bool:
        """Whether nothing but this buffer holds the tensor it handed out last."""
        # references: the ``view`` slot (and ``data`` when it is the whole buffer) and getrefcount's argument
        return sys.getrefcount(self.view) <= (3 if self.view is self.data else 2)

    def fits(self, scores: torch.Tensor) -> bool:
        """Whether ``scores`` fits in this buffer's first rows."""
        data = self.data
        return (
            data.shape[0] >= scores.shape[0]
            and data.shape[1] == scores.shape[1]
            and data.dtype == scores.dtype
            and data.device == scores.device
        )

    def reset(self, rows: int) -> None:
        """-inf everywhere again, and the view of the first ``rows`` rows handed out next."""
        if self.dirty is not None:
            self.data.view(-1)[self.dirty] = float("-inf")
            self.dirty = None
        if self.dirty_rows is not None:
            self.data[self.dirty_rows] = float("-inf")
            self.dirty_rows = None
        self.view = self.data if rows == self.data.shape[0] else self.data[:rows]


class SpanConstrainedLogitsProcessor(LogitsProcessor):
    """A ``transformers.LogitsProcessor`` that only lets the model copy spans of its input sentence.

    Args:
        tokenizer: the model's tokenizer (its vocabulary trie is built once and cached).
        sentences: the input sentence of each batch item, in batch order. With beam search or
            ``num_return_sequences`` the rows are ``batch * k`` and row ``r`` belongs to sentence ``r // k``.
        config: a :class:`SpanConstraintConfig`; keyword ``overrides`` replace its fields.
        eos_token_id: the id(s) that end the output (default: the tokenizer's EOS).

    Works with greedy search, sampling (temperature/top-k/top-p run after it) and beam search, with left
    padding. One processor serves one ``generate`` call; calling ``generate`` again with it starts afresh
    (a new prompt is detected), and :meth:`reset` does it explicitly.

    It keeps its own cost: ``seconds``, the time spent in it (its construction, which builds the sentences'
    automata, and every call), and ``row_steps``, the rows it masked summed over the calls. On a GPU this is
    CPU time the device may wait for; ``NERExtractor.last_stats`` reports it for ``predict``.

    Example:
        >>> proc = SpanConstrainedLogitsProcessor(tokenizer, ["Ada met Bob ."], max_span_words=4)  # doctest: +SKIP
        >>> model.generate(**enc, logits_processor=LogitsProcessorList([proc]))  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Any,
        sentences: Sequence[str],
        config: SpanConstraintConfig | None = None,
        *,
        eos_token_id: int | Sequence[int] | None = None,
        **overrides: Any,
    ) -> None:
        start = time.perf_counter()
        #: time spent in this processor (construction and calls), in seconds
        self.seconds = 0.0
        #: rows masked, summed over the calls
        self.row_steps = 0
        if isinstance(sentences, str) or not isinstance(sentences, Sequence):
            raise TypeError(
                "sentences must be a list with one input sentence per batch item, got "
                f"{type(sentences).__name__}; for one sentence pass [sentence]."
            )
        if not sentences:
            raise ValueError("sentences is empty: pass one input sentence per batch item.")
        _check_sentences(sentences)
        config = config or SpanConstraintConfig()
        if overrides:
            unknown = set(overrides) - {f.name for f in fields(SpanConstraintConfig)}
            if unknown:
                raise TypeError(
                    f"Unknown option(s) {sorted(unknown)}; valid: {[f.name for f in fields(SpanConstraintConfig)]}."
                )
            config = SpanConstraintConfig(
                **{**{f.name: getattr(config, f.name) for f in fields(config)}, **overrides}
            )
        self.config = config
        self.tokenizer = tokenizer
        self.sentences = list(sentences)
        if eos_token_id is None:
            eos_token_id = tokenizer.eos_token_id
        if eos_token_id is None:
            raise ValueError("The tokenizer has no eos_token_id: pass eos_token_id= to the processor.")
        eos = [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(e) for e in eos_token_id]
        self.eos_token_ids = sorted(set(eos))
        self._eos_set = frozenset(self.eos_token_ids)
        self._eos_tensor = torch.tensor(self.eos_token_ids, dtype=torch.long)
        self.trie = VocabularyTrie.for_tokenizer(tokenizer)
        self.automata = [self.trie.automaton(s, config) for s in self.sentences]
        for i, auto in enumerate(self.automata):
            ids, eos_ok = auto.allowed(auto.initial)
            if ids.numel() == 0 and not eos_ok:
                raise ValueError(
                    f"sentences[{i}]: no token of this tokenizer can start the output preamble {PREAMBLE!r}; "
                    "the tokenizer's vocabulary cannot express the CLLMFS template."
                )
        self.num_escaped_rows = 0
        self.reset()
        self.seconds = time.perf_counter() - start

    def reset(self) -> None:
        """Forget the generation in progress (the next call starts a new one)."""
        self._prompt: torch.Tensor | None = None
        self._states: dict[tuple, State | None] = {}
        self._ids_memo: dict[tuple[RowAutomaton, State], torch.Tensor] = {}
        # the last call's rows and their states: greedy search and sampling append one token to every row
        # and never reorder them, so a row's state follows from its own last state (see _row_states)
        self._last_ids: torch.Tensor | None = None
        # a loop that drives the rows itself (add_rows) starts from every sentence's initial state
        self._last_states: list[tuple[int, State | None]] = [
            (i, auto.initial) for i, auto in enumerate(self.automata)
        ]
        # two output buffers used in turn (see _output_buffer)
        self._buffers: list[_MaskBuffer] = []

    @_clocked
    def keep_rows(self, rows: Sequence[int]) -> None:
        """Keep only these rows (indices into the current batch, in order): for a decoding loop that drops rows
        from its batch (ended ones, say) between two calls. One row per sentence (no beams)."""
        if len(self._last_states) != len(self.sentences) or (
            self._last_ids is not None and self._last_ids.shape[0] != len(self.sentences)
        ):
            raise ValueError(
                "keep_rows needs one row per sentence and a call before it (a loop that drops rows, no beams)."
            )
        rows = list(rows)
        self.sentences = [self.sentences[r] for r in rows]
        self.automata = [self.automata[r] for r in rows]
        # the rows' groups are their new positions
        self._last_states = [(i, self._last_states[r][1]) for i, r in enumerate(rows)]
        if self._last_ids is not None:
            index = torch.tensor(rows, dtype=torch.long, device=self._last_ids.device)
            self._last_ids = self._last_ids[index]
            if self._prompt is not None:
                self._prompt = self._prompt[index.to(self._prompt.device)]
                self._prompt_sorted = self._prompt.sort(dim=0).values
        self._states = {}

    # -- a decoding loop that drives the rows itself ----------------------------------------------------
    @_clocked
    def add_rows(self, sentences: Sequence[str]) -> None:
        """Append one row per sentence, at the start of its answer: for a decoding loop that admits records
        into the rows others freed (:mod:`cllmfs_hf.extractor.greedy`). Such a loop drives the rows itself:
        :meth:`mask_scores` masks the current rows, :meth:`advance_rows` feeds each row its chosen token,
        :meth:`keep_rows` drops rows; it does not call the processor on ``input_ids``."""
        if self._last_ids is not None or len(self._last_states) != len(self.sentences):
            raise ValueError(
                "add_rows serves a loop that drives the rows itself (mask_scores / advance_rows), one row per "
                "sentence; this processor was called on input_ids: make a new one."
            )
        _check_sentences(sentences)
        start = len(self.sentences)
        new = [self.trie.automaton(s, self.config) for s in sentences]
        self.sentences.extend(sentences)
        self.automata.extend(new)
        self._last_states.extend((start + i, auto.initial) for i, auto in enumerate(new))

    @_clocked
    def advance_rows(self, tokens: Sequence[int]) -> None:
        """Each current row took ``tokens[row]`` (a loop that drives the rows itself, see :meth:`add_rows`)."""
        if len(tokens) != len(self._last_states):
            raise ValueError(f"advance_rows got {len(tokens)} tokens for {len(self._last_states)} rows.")
        self._last_states = self._advance_rows(list(tokens))

    @_clocked
    def mask_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """The scores of the current rows (in order) with every token the constraint forbids at -inf (a loop
        that drives the rows itself, see :meth:`add_rows`)."""
        if scores.shape[0] != len(self._last_states):
            raise ValueError(
                f"mask_scores got {scores.shape[0]} rows of scores for {len(self._last_states)} rows."
            )
        return self._masked(self._last_states, scores)

    # -- state bookkeeping ----------------------------------------------------------------------------
    def _row_states(self, input_ids: torch.Tensor) -> list[tuple[int, State | None]]:
        rows = input_ids.shape[0]
        if rows % len(self.sentences):
            raise ValueError(
                f"The batch has {rows} rows, not a multiple of the {len(self.sentences)} sentences given to "
                "SpanConstrainedLogitsProcessor: pass exactly one sentence per batch item (before beams)."
            )
        expand = rows // len(self.sentences)
        last = self._last_ids
        if (
            last is not None
            and last.shape[0] == rows
            and input_ids.shape[1] == last.shape[1] + 1
            and torch.equal(input_ids[:, :-1], last)
        ):
            # the fast path: every row is last call's row plus one token (greedy search, sampling)
            out = self._advance_rows(input_ids[:, -1].tolist())
            self._last_ids, self._last_states = input_ids.clone(), out  # a caller may reuse its buffer
            return out
        if (
            self._prompt is None
            or self._prompt.shape[0] != rows
            or input_ids.shape[1] <= self._prompt.shape[1]
            or not torch.equal(input_ids[:, : self._prompt.shape[1]].sort(dim=0).values, self._prompt_sorted)
        ):
            self._prompt = input_ids.clone()
            self._prompt_sorted = self._prompt.sort(dim=0).values
            self._states = {}
        elif last is not None and last.shape[1] + 1 == input_ids.shape[1]:
            # rows were reordered (beam search): key last call's states by their generated prefix
            self._states = {
                (group, tuple(gen)): state
                for gen, (group, state) in zip(last[:, self._prompt.shape[1] :].tolist(), self._last_states)
            }
        plen = self._prompt.shape[1]
        generated = input_ids[:, plen:].tolist()
        new_states: dict[tuple, State | None] = {}
        out: list[tuple[int, State | None]] = []
        for r, gen in enumerate(generated):
            group = r // expand
            key = (group, tuple(gen))
            if key in new_states:
                out.append((group, new_states[key]))
                continue
            auto = self.automata[group]
            if not gen:
                state: State | None = auto.initial
            else:
                prev = self._states.get((group, tuple(gen[:-1])), auto.initial if len(gen) == 1 else None)
                if prev is None:
                    prev = self._replay(auto, gen[:-1])
                state = self._next_state(group, prev, gen[-1])
            new_states[key] = state
            out.append((group, state))
        self._states = new_states
        self._last_ids, self._last_states = input_ids.clone(), out
        return out

    def _advance_rows(self, tokens: list[int]) -> list[tuple[int, State | None]]:
        """The rows' states after each row's own last state took one more token."""
        return [
            (group, self._next_state(group, state, token))
            for (group, state), token in zip(self._last_states, tokens)
        ]

    def _next_state(self, group: int, state: State | None, token: int) -> State | None:
        """The state of a row of sentence ``group`` after ``token``: ``_ENDED`` once the row emitted EOS, None
        once it escaped the constraint (another processor forced a forbidden token): such a row is left alone."""
        if state is None or state is _ENDED:
            return state
        if token in self._eos_set:
            return _ENDED
        nxt = self.automata[group].advance(state, token)
        if not nxt:
            self._escaped(group, token)
            return None
        return nxt

    def _replay(self, auto: RowAutomaton, gen: list[int]) -> State | None:
        state: State = auto.initial
        for tok in gen:
            if tok in self._eos_set:
                return _ENDED
            state = auto.advance(state, tok)
            if not state:
                return None
        return state

    def _escaped(self, group: int, token: int) -> None:
        self.num_escaped_rows += 1
        warnings.warn(
            f"SpanConstrainedLogitsProcessor: row of sentence {group} received token {token} "
            f"({self.trie.decode([token])!r}), which the constraint forbids (another processor or a forced "
            "token overrode the mask); the row is left unconstrained from here on.",
            RuntimeWarning,
            stacklevel=4,
        )

    # -- the processor ----------------------------------------------------------------------------------
    @_clocked
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self._masked(self._row_states(input_ids), scores)

    def _masked(self, states: list[tuple[int, State | None]], scores: torch.Tensor) -> torch.Tensor:
        """``scores`` with every token the rows' ``states`` forbid at -inf (in a reused output buffer)."""
        self.row_steps += len(states)
        rows: list[int] = []
        cols: list[torch.Tensor] = []
        free_rows: list[int] = []
        for r, (group, state) in enumerate(states):
            if state is None:
                free_rows.append(r)
            elif state is _ENDED:
                # an ended row's scores are never used (generate pads it; the extractor drops it), but they must
                # stay a distribution for sampling: only EOS, not a copy of the whole row
                rows.append(r)
                cols.append(self._eos_tensor)
            else:
                rows.append(r)
                cols.append(self._allowed_ids(group, state))
        if not rows:
            return scores
        vocab = scores.shape[-1]
        buffer = self._output_buffer(scores)
        out = buffer.view
        # the allowed entries as flat indices into the (rows, vocab) output: one gather and one scatter
        counts = torch.tensor([c.numel() for c in cols])
        col = torch.cat(cols)
        flat = col + torch.repeat_interleave(torch.tensor(rows) * vocab, counts)
        if self._ids_past_vocab(vocab):
            flat = flat[col < vocab]
        flat = flat.to(scores.device)
        out.view(-1)[flat] = torch.take(scores, flat)
        buffer.dirty = flat
        if free_rows:
            free = torch.tensor(free_rows, device=scores.device)
            out[free] = scores[free]
            buffer.dirty_rows = free
        return out

    def _output_buffer(self, scores: torch.Tensor) -> _MaskBuffer:
        """A tensor shaped like ``scores``, -inf everywhere, to write the allowed scores into (not ``scores``
        itself: the caller may keep the raw scores).

        Two buffers are used in turn, so the one returned by the previous call (which the caller is still
        using) is never overwritten; the one before it is reused only when nothing but this processor holds
        it (``generate(output_scores=True)`` keeps every step's scores: then each call gets a new tensor).
        A reused buffer is reset to -inf only where the call before wrote (a few hundred entries, not
        ``rows x vocab``): that is what keeps the per-row cost of the processor independent of the vocabulary.
        A batch that lost rows (``keep_rows``) gets the first rows of the same buffer.
        """
        buffers = self._buffers
        if len(buffers) == 2:
            old = buffers.pop(0)
            if old.released() and old.fits(scores):
                old.reset(scores.shape[0])
                buffers.append(old)
                return old
        new = _MaskBuffer(torch.full(scores.shape, float("-inf"), dtype=scores.dtype, device=scores.device))
        buffers.append(new)
        return new

    def _allowed_ids(self, group: int, state: State) -> torch.Tensor:
        """The ids a row may emit next (EOS included where the output may end), memoised per state."""
        auto = self.automata[group]
        key = (auto, state)  # the automaton, not the row: rows move (keep_rows), sentences repeat
        ids = self._ids_memo.get(key)
        if ids is None:
            ids, eos_ok = auto.allowed(state)
            if eos_ok:
                ids = torch.cat([ids, self._eos_tensor])
            self._ids_memo[key] = ids
        return ids

    def _ids_past_vocab(self, vocab: int) -> bool:
        """Whether some id of the tokenizer is >= the model's score width (a model with a smaller head)."""
        return self.trie.vocab_size > vocab or max(self.eos_token_ids) >= vocab

    # -- helpers for callers ---------------------------------------------------------------------------
    def decode(self, generated_ids: Sequence[int]) -> tuple[str, bool]:
        """(text, ended): the text of generated ids up to the first EOS and whether an EOS was emitted."""
        ids = list(generated_ids)
        for i, t in enumerate(ids):
            if t in self._eos_set:
                return self.trie.decode(ids[:i]), True
        return self.trie.decode(ids), False
