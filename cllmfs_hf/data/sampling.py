"""Few-shot sampling: greedy K-shot support sets and Few-NERD style N-way K~2K-shot episodes.

Both samplers are deterministic for a given ``seed`` and input order, never modify the sentences they are
given (restricted copies are returned where mentions have to be removed) and raise :class:`SamplingError`
(a ``ValueError``) with the reason and the fix when the pool cannot satisfy the request.

- :func:`greedy_kshot` - the greedy rule of Yang & Katiyar (2020), used by most few-shot NER benchmarks
  (CrossNER-style K-shot training sets): visit the types from the rarest to the most frequent and add random
  sentences that contain the type until it has at least K mentions. Every type ends with >= K mentions
  (a type with fewer in the whole pool gets all it has, with a warning, or is skipped: ``rare_types``);
  frequent types usually get more, because sentences picked for rarer types also carry them.
- :func:`sample_episode` / :func:`sample_episodes` - the greedy N-way K~2K-shot rule of Few-NERD (Ding et
  al. 2021): each of the N types has between K and 2K mentions in the support set, and between Q and 2Q in
  the query set, the two sets being disjoint.

Example:
    >>> from cllmfs_hf.data.types import AnnotatedSentence
    >>> pool = [AnnotatedSentence.from_tokens(["Ada", "met", "Bob"], [(0, 1, "PER"), (2, 3, "PER")]),
    ...         AnnotatedSentence.from_tokens(["in", "Paris"], [(1, 2, "LOC")]),
    ...         AnnotatedSentence.from_tokens(["Rome", "and", "Oslo"], [(0, 1, "LOC"), (2, 3, "LOC")])]
    >>> support = greedy_kshot(pool, 2, seed=0)
    >>> all(count_mentions(support)[t] >= 2 for t in ("PER", "LOC"))
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .types import AnnotatedSentence

logger = logging.getLogger(__name__)

#: How greedy_kshot treats a type with fewer than K mentions in the whole pool (see its docstring).
RARE_TYPE_POLICIES = ("take_all", "skip", "error")

__all__ = [
    "SamplingError",
    "Episode",
    "count_mentions",
    "restrict_labels",
    "greedy_kshot",
    "rare_type_counts",
    "RARE_TYPE_POLICIES",
    "sample_episode",
    "sample_episodes",
    "episode_seed",
]


class SamplingError(ValueError):
    """The sentence pool cannot satisfy the sampling request (the message says why and what to change)."""


def count_mentions(sentences: Iterable[AnnotatedSentence]) -> Counter[str]:
    """Number of mentions per label over ``sentences``.

    Example:
        >>> from cllmfs_hf.data.types import AnnotatedSentence
        >>> count_mentions([AnnotatedSentence.from_tokens(["Ada", "Bob"], [(0, 1, "PER"), (1, 2, "PER")])])
        Counter({'PER': 2})
    """
    return Counter(m.label for s in sentences for m in s.mentions)


def restrict_labels(sentence: AnnotatedSentence, labels: Iterable[str]) -> AnnotatedSentence:
    """A copy of ``sentence`` keeping only the mentions whose label is in ``labels`` (the others become O).

    Example:
        >>> from cllmfs_hf.data.types import AnnotatedSentence
        >>> s = AnnotatedSentence.from_tokens(["Ada", "in", "Paris"], [(0, 1, "PER"), (2, 3, "LOC")])
        >>> [m.label for m in restrict_labels(s, {"LOC"}).mentions], [m.label for m in s.mentions]
        (['LOC'], ['PER', 'LOC'])
    """
    keep = set(labels)
    return dataclasses.replace(sentence, mentions=[m for m in sentence.mentions if m.label in keep])


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}. Fix: pass {name}=1 or more.")


def _label_pool(
    sentences: Sequence[AnnotatedSentence], labels: Iterable[str] | None
) -> tuple[Counter[str], list[str]]:
    totals = count_mentions(sentences)
    if labels is None:
        chosen = sorted(totals)
    else:
        if isinstance(labels, str):
            raise SamplingError(
                f"labels must be a list of labels, got the string {labels!r}: pass [{labels!r}]."
            )
        chosen = list(dict.fromkeys(labels))
        if not chosen:
            raise SamplingError(
                f"labels is empty: pass the types to sample (pool labels: {sorted(totals)}), or labels=None for all."
            )
        missing = [t for t in chosen if totals[t] == 0]
        if missing:
            raise SamplingError(
                f"labels {missing} have no mention in the {len(sentences)} pool sentences (pool labels: "
                f"{sorted(totals)}). Fix: pass labels spelled as the dataset spells them, or a pool that has them."
            )
    if not chosen:
        raise SamplingError(
            f"the pool of {len(sentences)} sentences has no mention at all. Fix: sample from an annotated split."
        )
    return totals, chosen


def rare_type_counts(
    sentences: Sequence[AnnotatedSentence], k: int, *, labels: Iterable[str] | None = None
) -> dict[str, int]:
    """The types (of ``labels``, default all) with fewer than ``k`` mentions in the pool -> their counts.

    Example:
        >>> from cllmfs_hf.data.types import AnnotatedSentence
        >>> pool = [AnnotatedSentence.from_tokens(["Ada", "Oslo"], [(0, 1, "PER"), (1, 2, "LOC")]),
        ...         AnnotatedSentence.from_tokens(["Bob"], [(0, 1, "PER")])]
        >>> rare_type_counts(pool, 2)
        {'LOC': 1}
    """
    _check_positive(k=k)
    totals, chosen = _label_pool(sentences, labels)
    return {t: totals[t] for t in chosen if totals[t] < k}


def greedy_kshot(
    sentences: Sequence[AnnotatedSentence],
    k: int,
    *,
    labels: Iterable[str] | None = None,
    seed: int = 0,
    rare_types: str = "take_all",
) -> list[AnnotatedSentence]:
    """A greedy K-shot support set (Yang & Katiyar 2020, Algorithm 1).

    Rule: count the mentions of each type in the pool; visit the types from the rarest to the most frequent
    (ties by label); for the current type, while it has fewer than ``k`` mentions in the support set, add a
    random not-yet-chosen pool sentence that contains it (without replacement) and update the counts of all
    types in that sentence. Every type ends with at least ``k`` mentions; there is no upper bound.

    With ``labels`` given, only those types are sampled and mentions of other types are removed from the
    returned copies (they would otherwise be unlabelled entities of types outside the task); without
    ``labels`` the pool's own sentence objects are returned. The result keeps the pool order; it is a pure
    function of (pool order, ``k``, ``labels``, ``seed``, ``rare_types``).

    A type with fewer than ``k`` mentions in the whole pool (see :func:`rare_type_counts`) is handled as the
    few-shot literature does, by ``rare_types``: ``"take_all"`` (default) takes every sentence that has it and
    warns; ``"skip"`` leaves the type out (its mentions are removed from the returned copies) and warns;
    ``"error"`` raises :class:`SamplingError`.

    Raises:
        SamplingError: ``rare_types="error"`` and a type is short, a requested label is absent, or every type
            is skipped.

    Example:
        >>> from cllmfs_hf.data.types import AnnotatedSentence
        >>> pool = [AnnotatedSentence.from_tokens([w], [(0, 1, t)]) for w, t in
        ...         [("Ada", "PER"), ("Bob", "PER"), ("Paris", "LOC"), ("Rome", "LOC"), ("Oslo", "LOC")]]
        >>> sorted(count_mentions(greedy_kshot(pool, 2, seed=1)).items())
        [('LOC', 2), ('PER', 2)]
    """
    _check_positive(k=k)
    if rare_types not in RARE_TYPE_POLICIES:
        raise ValueError(f"rare_types={rare_types!r}; choose one of {list(RARE_TYPE_POLICIES)}.")
    totals, chosen = _label_pool(sentences, labels)
    short = {t: totals[t] for t in chosen if totals[t] < k}
    if short and rare_types == "error":
        raise SamplingError(
            f"types with fewer than k={k} mentions in the pool: {short}. Fix: lower k, add sentences, "
            "leave those types out with labels=[...], or pass rare_types='take_all' / 'skip'."
        )
    if short and rare_types == "skip":
        chosen = [t for t in chosen if t not in short]
        if not chosen:
            raise SamplingError(
                f"every type has fewer than k={k} mentions in the pool ({short}), so rare_types='skip' leaves "
                "nothing to sample. Fix: lower k or use rare_types='take_all'."
            )
        logger.warning(
            "K=%d: types with fewer than %d mentions in the pool are left out of the support set (rare_types="
            "'skip'): %s.",
            k,
            k,
            short,
        )
        labels = chosen  # the copies drop the skipped types' mentions
    elif short:
        logger.warning(
            "K=%d: types with fewer than %d mentions in the pool get all they have (rare_types='take_all'): %s.",
            k,
            k,
            short,
        )
    keep = set(chosen)
    counts_per_sentence = [Counter(m.label for m in s.mentions if m.label in keep) for s in sentences]
    rng = random.Random(seed)
    order = sorted(chosen, key=lambda t: (totals[t], t))
    picked: set[int] = set()
    have: Counter[str] = Counter()
    for t in order:
        target = min(k, totals[t])
        if have[t] >= target:
            continue
        candidates = [i for i, c in enumerate(counts_per_sentence) if c[t] and i not in picked]
        rng.shuffle(candidates)
        for i in candidates:
            if have[t] >= target:
                break
            picked.add(i)
            have.update(counts_per_sentence[i])
        if have[t] < target:  # unreachable: every pool mention of t is reachable; a guard against short sets
            raise SamplingError(f"could not reach {target} mentions of {t!r} (got {have[t]}).")
    out = []
    for i in sorted(picked):
        s = sentences[i]
        out.append(s if labels is None else restrict_labels(s, keep))
    return out


@dataclass
class Episode:
    """One N-way K~2K-shot episode: its entity ``types``, the ``support`` set and the disjoint ``query`` set.

    Sentences hold only mentions of ``types``. ``seed`` is the seed that reproduces the episode with
    :func:`sample_episode`.

    Example:
        >>> ep = Episode(types=["PER"], support=[], query=[], seed=0)
        >>> ep.n_way
        1
    """

    types: list[str]
    support: list[AnnotatedSentence] = field(default_factory=list)
    query: list[AnnotatedSentence] = field(default_factory=list)
    seed: int = 0

    @property
    def n_way(self) -> int:
        return len(self.types)

    def support_counts(self) -> Counter[str]:
        """Mentions per type in the support set."""
        return count_mentions(self.support)

    def query_counts(self) -> Counter[str]:
        """Mentions per type in the query set."""
        return count_mentions(self.query)


OtherTypes = Literal["exclude", "drop"]


def _greedy_set(
    candidates: list[int],
    counts: Sequence[Counter[str]],
    types: Sequence[str],
    k: int,
    rng: random.Random,
) -> list[int] | None:
    """Few-NERD's greedy rule over ``candidates``; ``None`` when no order of them reaches K for all types.

    A candidate is added when no type would exceed 2K and it brings a mention of a type still below K. As
    counts only grow, a rejected sentence can never become acceptable later, so one pass over a random
    permutation is the same as Few-NERD's repeated random draws, and it terminates.
    """
    order = list(candidates)
    rng.shuffle(order)
    have: Counter[str] = Counter()
    chosen: list[int] = []
    for i in order:
        c = counts[i]
        if any(have[t] + n > 2 * k for t, n in c.items()):
            continue
        if not any(have[t] < k for t in c):
            continue
        chosen.append(i)
        have.update(c)
        if all(have[t] >= k for t in types):
            return chosen
    return None


def sample_episode(
    sentences: Sequence[AnnotatedSentence],
    n_way: int,
    k_shot: int,
    n_query: int,
    *,
    seed: int = 0,
    labels: Iterable[str] | None = None,
    other_types: OtherTypes = "exclude",
    max_attempts: int = 100,
) -> Episode:
    """One Few-NERD style N-way K~2K-shot episode (Ding et al. 2021, greedy sampling).

    Rule: draw ``n_way`` types at random among ``labels`` (default: every label of the pool); the candidate
    sentences are those with at least one mention of the drawn types; go through them in random order and add
    a sentence to the support set when no type would exceed ``2 * k_shot`` mentions and it brings a mention of
    a type that still has fewer than ``k_shot``; stop once every type has ``k_shot``. The query set is drawn
    the same way (bounds ``n_query`` .. ``2 * n_query``) from the candidates left, so support and query are
    disjoint (as positions in ``sentences``).

    Mentions of types outside the N, ``other_types``:

    - ``"exclude"`` (default, as Few-NERD's own sampler, whose ``Sample.valid`` admits a sentence only when
      all its types are among the N): a sentence with any other type is not a candidate, so no real entity
      is turned into O;
    - ``"drop"``: such sentences are candidates and their other-type mentions are removed from the returned
      copies (Few-NERD's data loader relabels them O). More candidates; some entities become unlabelled.

    Either way every episode sentence carries only mentions of ``Episode.types``.

    When one draw cannot be completed (the greedy pass runs out of candidates), types are redrawn, up to
    ``max_attempts`` draws; then :class:`SamplingError` is raised.

    Example:
        >>> from cllmfs_hf.data.types import AnnotatedSentence
        >>> pool = [AnnotatedSentence.from_tokens([w], [(0, 1, t)]) for w, t in
        ...         [("Ada", "PER"), ("Bob", "PER"), ("Paris", "LOC"), ("Rome", "LOC"), ("Oslo", "ORG")]]
        >>> ep = sample_episode(pool, n_way=2, k_shot=1, n_query=1, labels=["PER", "LOC"], seed=0)
        >>> sorted(ep.types), len(ep.support), len(ep.query)
        (['LOC', 'PER'], 2, 2)
    """
    _check_positive(n_way=n_way, k_shot=k_shot, n_query=n_query, max_attempts=max_attempts)
    if other_types not in ("exclude", "drop"):
        raise ValueError(
            f"other_types must be 'exclude' or 'drop', got {other_types!r}. Fix: pass one of them."
        )
    totals, eligible = _label_pool(sentences, labels)
    if n_way > len(eligible):
        raise SamplingError(
            f"n_way={n_way} but only {len(eligible)} types are available ({eligible}). Fix: lower n_way "
            f"or widen labels."
        )
    need = k_shot + n_query
    short = {t: totals[t] for t in eligible if totals[t] < need}
    if short:
        raise SamplingError(
            f"types with fewer than k_shot + n_query = {need} mentions in the pool: {short}. Fix: lower "
            f"k_shot/n_query, or leave those types out with labels=[...]."
        )
    counts = [Counter(m.label for m in s.mentions) for s in sentences]
    rng = random.Random(seed)
    eligible = sorted(eligible)
    for _ in range(max_attempts):
        types = sorted(rng.sample(eligible, n_way))
        wanted = set(types)
        if other_types == "exclude":
            cand = [i for i, c in enumerate(counts) if c and wanted.issuperset(c)]
            view = counts
        else:
            view = [Counter({t: n for t, n in c.items() if t in wanted}) for c in counts]
            cand = [i for i, c in enumerate(view) if c]
        support = _greedy_set(cand, view, types, k_shot, rng)
        if support is None:
            continue
        taken = set(support)
        query = _greedy_set([i for i in cand if i not in taken], view, types, n_query, rng)
        if query is None:
            continue

        def build(idx: list[int], types: list[str] = types) -> list[AnnotatedSentence]:
            return [restrict_labels(sentences[i], types) for i in sorted(idx)]

        return Episode(types=types, support=build(support), query=build(query), seed=seed)
    raise SamplingError(
        f"no {n_way}-way {k_shot}~{2 * k_shot}-shot episode with {n_query}~{2 * n_query} query mentions per type "
        f"found in {max_attempts} draws from {len(sentences)} sentences (other_types={other_types!r}). Fix: lower "
        f"k_shot/n_query/n_way, pass other_types='drop' for more candidates, or raise max_attempts."
    )


def episode_seed(seed: int, index: int) -> int:
    """The seed of episode ``index`` in :func:`sample_episodes` (stable across runs and platforms).

    Example:
        >>> episode_seed(0, 3) == episode_seed(0, 3) != episode_seed(0, 4)
        True
    """
    digest = hashlib.sha256(f"cllmfs-episode:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def sample_episodes(
    sentences: Sequence[AnnotatedSentence],
    n_way: int,
    k_shot: int,
    n_query: int,
    n_episodes: int,
    *,
    seed: int = 0,
    labels: Iterable[str] | None = None,
    other_types: OtherTypes = "exclude",
    max_attempts: int = 100,
) -> Iterator[Episode]:
    """Yield ``n_episodes`` independent episodes; episode ``i`` is
    ``sample_episode(..., seed=episode_seed(seed, i))``, so it does not depend on ``n_episodes``.

    Arguments are those of :func:`sample_episode`; episodes are sampled with replacement across episodes
    (a sentence may appear in several episodes, never in the support and query of the same one). The
    arguments are checked at once; the episodes are sampled lazily, as the iterator is consumed.

    Example:
        >>> from cllmfs_hf.data.types import AnnotatedSentence
        >>> pool = [AnnotatedSentence.from_tokens([w], [(0, 1, "PER")]) for w in ("Ada", "Bob", "Cy")]
        >>> [len(e.support) for e in sample_episodes(pool, 1, 1, 1, n_episodes=3)]
        [1, 1, 1]
    """
    _check_positive(
        n_episodes=n_episodes, n_way=n_way, k_shot=k_shot, n_query=n_query, max_attempts=max_attempts
    )
    if other_types not in ("exclude", "drop"):
        raise ValueError(
            f"other_types must be 'exclude' or 'drop', got {other_types!r}. Fix: pass one of them."
        )
    chosen = list(labels) if labels is not None else None

    def episodes() -> Iterator[Episode]:
        for i in range(n_episodes):
            yield sample_episode(
                sentences,
                n_way,
                k_shot,
                n_query,
                seed=episode_seed(seed, i),
                labels=chosen,
                other_types=other_types,
                max_attempts=max_attempts,
            )

    return episodes()
