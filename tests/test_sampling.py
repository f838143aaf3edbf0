"""Greedy K-shot support sets and Few-NERD N-way K~2K-shot episodes, on real files and on random pools.

The tests over a whole real pool (CrossNER politics train, Few-NERD INTER dev) need ../shared/data and are marked
``needs_shared_data``; the others run on the committed politics excerpt or on synthetic pools.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllmfs_hf.data.readers import find_splits, read_conll
from cllmfs_hf.data.sampling import (
    Episode,
    SamplingError,
    episode_seed,
    greedy_kshot,
    rare_type_counts,
    sample_episode,
    sample_episodes,
)
from cllmfs_hf.data.types import AnnotatedSentence


def counts(sentences) -> Counter:
    """Independent mention count per label."""
    c: Counter = Counter()
    for s in sentences:
        for m in s.mentions:
            c[m.label] += 1
    return c


NEEDS_FEWNERD = pytest.mark.needs_shared_data(
    "the whole Few-NERD INTER dev pool (18,817 sentences, 13 types, 'art-painting' only 46 mentions): "
    "10-way 5-shot + 5-query episodes and the exact rare-type counts need all of it"
)
NEEDS_POLITICS_POOL = pytest.mark.needs_shared_data(
    "the whole 200-sentence CrossNER politics train pool: K-shot over all 9 types needs it "
    "(K=10 needs 10 'person' mentions, the file has 14, the first 40 sentences 4)"
)


@pytest.fixture(scope="module")
def fewnerd(shared_data) -> list[AnnotatedSentence]:
    return read_conll(find_splits(shared_data / "fewnerd" / "inter")["dev"], scheme="io")


@pytest.fixture(scope="module")
def politics_train(shared_data) -> list[AnnotatedSentence]:
    return read_conll(shared_data / "crossner" / "politics" / "train.txt")


@pytest.fixture(scope="module")
def politics_head(politics_train_head) -> list[AnnotatedSentence]:
    """The committed excerpt: the first 40 CrossNER politics train sentences."""
    return read_conll(politics_train_head)


# ---------------------------------------------------------------------------------------------------------
# greedy K-shot
# ---------------------------------------------------------------------------------------------------------
@NEEDS_POLITICS_POOL
@pytest.mark.parametrize("k", [1, 5, 10])
def test_greedy_kshot_bound_on_crossner(politics_train, k):
    pool_counts = counts(politics_train)
    support = greedy_kshot(politics_train, k, seed=3)
    got = counts(support)
    assert set(got) == set(pool_counts)
    assert all(got[t] >= k for t in pool_counts), got
    assert len(support) < len(politics_train)
    sources = [s.source for s in support]
    assert len(set(sources)) == len(sources)
    pool_order = [s.source for s in politics_train]
    assert sources == sorted(sources, key=pool_order.index)  # pool order kept


def test_greedy_kshot_follows_the_rarest_first_rule():
    """X is rarer than Y, so X is served first; a sentence picked for X also counts for Y."""

    def sent(name: str, labels: str) -> AnnotatedSentence:
        return AnnotatedSentence.from_tokens(
            list(labels), [(j, j + 1, t) for j, t in enumerate(labels)], source=name
        )

    pool = [sent("xy", "XY"), sent("x", "X")] + [sent(f"y{i}", "Y") for i in range(6)]
    outcomes = set()
    for seed in range(30):
        support = greedy_kshot(pool, 1, seed=seed)
        names = [s.source for s in support]
        # X first: "xy" alone covers both; after "x", the Y step adds one more sentence with a Y ("xy" or a "y")
        assert names == ["xy"] or (
            len(names) == 2 and "x" in names and ("xy" in names or names[1].startswith("y"))
        )
        outcomes.add(tuple(names) if names == ["xy"] else "x")
    assert outcomes == {("xy",), "x"}
    two = greedy_kshot([sent("x1", "X"), sent("x2", "X"), sent("x3", "X")] + pool[2:], 2, seed=5)
    assert counts(two) == Counter({"X": 2, "Y": 2}) and len(two) == 4


@NEEDS_POLITICS_POOL
def test_greedy_kshot_deterministic_and_seed_dependent(politics_train):
    a = greedy_kshot(politics_train, 5, seed=11)
    b = greedy_kshot(politics_train, 5, seed=11)
    assert [s.source for s in a] == [s.source for s in b]
    others = {tuple(s.source for s in greedy_kshot(politics_train, 5, seed=seed)) for seed in range(5)}
    assert len(others) > 1


def test_greedy_kshot_labels_restrict_and_do_not_mutate(politics_head):
    before = [list(s.mentions) for s in politics_head]
    support = greedy_kshot(politics_head, 2, labels=["politicalparty", "election"], seed=0)
    got = counts(support)
    assert set(got) == {"politicalparty", "election"} and min(got.values()) >= 2
    assert [list(s.mentions) for s in politics_head] == before


@NEEDS_FEWNERD
def test_greedy_kshot_error_names_the_short_type_on_fewnerd(fewnerd):
    with pytest.raises(SamplingError, match=r"fewer than k=50 .*'art-painting': 46"):
        greedy_kshot(fewnerd, 50, rare_types="error")


@NEEDS_FEWNERD
def test_greedy_kshot_takes_all_of_a_rare_type_on_fewnerd_and_warns(fewnerd, caplog):
    """The literature's rule: a type short of K in the pool gets every mention it has; the run goes on."""
    with caplog.at_level("WARNING", logger="cllmfs_hf.data.sampling"):
        support = greedy_kshot(fewnerd, 50, seed=0)
    got = counts(support)
    assert got["art-painting"] == 46
    assert all(got[t] >= 50 for t in counts(fewnerd) if t != "art-painting")
    assert "'art-painting': 46" in caplog.text and "take_all" in caplog.text


def test_greedy_kshot_errors(politics_head):
    with pytest.raises(SamplingError, match=r"labels \['spaceship'\] have no mention"):
        greedy_kshot(politics_head, 1, labels=["spaceship"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        greedy_kshot(politics_head, 0)
    with pytest.raises(SamplingError, match="no mention at all"):
        greedy_kshot([AnnotatedSentence.from_tokens(["nothing"])], 1)


@settings(max_examples=60, deadline=None)
@given(
    pool=st.lists(st.lists(st.sampled_from("ABCD"), min_size=0, max_size=4), min_size=1, max_size=25),
    k=st.integers(1, 4),
    seed=st.integers(0, 10**6),
)
def test_greedy_kshot_property(pool, k, seed):
    sentences = [
        AnnotatedSentence.from_tokens(
            [f"w{j}" for j in range(len(labels))], [(j, j + 1, t) for j, t in enumerate(labels)]
        )
        if labels
        else AnnotatedSentence.from_tokens(["w"])
        for labels in pool
    ]
    pool_counts = counts(sentences)
    if not pool_counts:
        with pytest.raises(SamplingError, match="no mention at all"):
            greedy_kshot(sentences, k, seed=seed)
        return
    short = {t for t, n in pool_counts.items() if n < k}
    if short:
        with pytest.raises(SamplingError, match="fewer than k="):
            greedy_kshot(sentences, k, seed=seed, rare_types="error")
    support = greedy_kshot(sentences, k, seed=seed)
    got = counts(support)
    # take_all: a short type gets every mention of the pool, the others at least k
    assert all(got[t] >= min(k, pool_counts[t]) for t in pool_counts)
    assert all(got[t] == pool_counts[t] for t in short)
    assert support == greedy_kshot(sentences, k, seed=seed)
    if short == set(pool_counts):
        with pytest.raises(SamplingError, match="leaves nothing to sample"):
            greedy_kshot(sentences, k, seed=seed, rare_types="skip")
    else:
        skipped = counts(greedy_kshot(sentences, k, seed=seed, rare_types="skip"))
        assert set(skipped) == set(pool_counts) - short and all(n >= k for n in skipped.values())


def test_rare_type_counts_and_policy_names(politics_head):
    pool = [
        AnnotatedSentence.from_tokens(["Ada", "Oslo"], [(0, 1, "PER"), (1, 2, "LOC")]),
        AnnotatedSentence.from_tokens(["Bob", "Eve"], [(0, 1, "PER"), (1, 2, "PER")]),
    ]
    assert rare_type_counts(pool, 2) == {"LOC": 1}
    assert rare_type_counts(pool, 2, labels=["PER"]) == {}
    skipped = greedy_kshot(pool, 2, rare_types="skip")
    assert counts(skipped) == {"PER": 3} and counts(pool)["LOC"] == 1  # copies, pool untouched
    with pytest.raises(ValueError, match=r"rare_types='some'; choose one of \['take_all', 'skip', 'error'\]"):
        greedy_kshot(pool, 2, rare_types="some")


# ---------------------------------------------------------------------------------------------------------
# Few-NERD episodes
# ---------------------------------------------------------------------------------------------------------
def check_episode(ep: Episode, n: int, k: int, q: int) -> None:
    assert len(ep.types) == len(set(ep.types)) == n
    sup, qry = counts(ep.support), counts(ep.query)
    assert set(sup) == set(ep.types) and set(qry) == set(ep.types), (sup, qry, ep.types)
    assert all(k <= sup[t] <= 2 * k for t in ep.types), sup
    assert all(q <= qry[t] <= 2 * q for t in ep.types), qry
    sup_src = {s.source for s in ep.support}
    qry_src = {s.source for s in ep.query}
    assert len(sup_src) == len(ep.support) and len(qry_src) == len(ep.query)
    assert not sup_src & qry_src


@NEEDS_FEWNERD
@pytest.mark.parametrize("n,k,q", [(5, 1, 1), (5, 5, 5), (10, 1, 2), (10, 5, 5)])
@pytest.mark.parametrize("other_types", ["exclude", "drop"])
def test_fewnerd_episodes_bounds(fewnerd, n, k, q, other_types):
    episodes = list(sample_episodes(fewnerd, n, k, q, n_episodes=4, seed=7, other_types=other_types))
    assert len(episodes) == 4
    for ep in episodes:
        check_episode(ep, n, k, q)
    assert len({tuple(e.types) for e in episodes}) > 1 or n == 13


@NEEDS_FEWNERD
def test_fewnerd_exclude_keeps_whole_sentences_drop_removes_others(fewnerd):
    by_source = {s.source: s for s in fewnerd}
    ep = sample_episode(fewnerd, 5, 5, 5, seed=1, other_types="exclude")
    for s in ep.support + ep.query:
        assert s.mentions == by_source[s.source].mentions  # nothing relabelled O
    dropped = 0
    for seed in range(5):
        ep = sample_episode(fewnerd, 3, 5, 5, seed=seed, other_types="drop")
        for s in ep.support + ep.query:
            original = by_source[s.source].mentions
            assert s.mentions == [m for m in original if m.label in ep.types]
            dropped += len(original) - len(s.mentions)
    assert dropped > 0  # the drop mode did meet, and remove, other-type mentions


@NEEDS_FEWNERD
def test_fewnerd_episodes_deterministic(fewnerd):
    a = sample_episode(fewnerd, 5, 2, 2, seed=123)
    b = sample_episode(fewnerd, 5, 2, 2, seed=123)
    assert (a.types, [s.source for s in a.support], [s.source for s in a.query]) == (
        b.types,
        [s.source for s in b.support],
        [s.source for s in b.query],
    )
    listed = list(sample_episodes(fewnerd, 5, 2, 2, n_episodes=3, seed=9))
    again = sample_episode(fewnerd, 5, 2, 2, seed=episode_seed(9, 2))
    assert [s.source for s in listed[2].support] == [s.source for s in again.support]
    assert listed[2].seed == episode_seed(9, 2)


@NEEDS_FEWNERD
def test_episode_errors(fewnerd):
    with pytest.raises(SamplingError, match="n_way=14 but only 13 types"):
        sample_episode(fewnerd, 14, 1, 1)
    with pytest.raises(SamplingError, match=r"fewer than k_shot \+ n_query = 60 .*art-painting"):
        sample_episode(fewnerd, 5, 30, 30)
    with pytest.raises(ValueError, match="n_query must be a positive integer"):
        sample_episodes(fewnerd, 5, 1, 0, n_episodes=2)  # checked at call time, not at iteration
    with pytest.raises(ValueError, match="other_types must be"):
        sample_episode(fewnerd, 5, 1, 1, other_types="keep")  # type: ignore[arg-type]
    # every sentence carries 3 PER mentions: never within 1..2 for K=1, so no episode exists
    crowded = [
        AnnotatedSentence.from_tokens(["a", "b", "c"], [(0, 1, "PER"), (1, 2, "PER"), (2, 3, "PER")])
    ] * 4
    with pytest.raises(SamplingError, match=r"no 1-way 1~2-shot episode .* in 5 draws"):
        sample_episode(crowded, 1, 1, 1, max_attempts=5)


@settings(max_examples=40, deadline=None)
@given(
    pool=st.lists(st.lists(st.sampled_from("ABCDE"), min_size=0, max_size=3), min_size=4, max_size=40),
    n=st.integers(1, 3),
    k=st.integers(1, 2),
    q=st.integers(1, 2),
    seed=st.integers(0, 10**6),
    other_types=st.sampled_from(["exclude", "drop"]),
)
def test_episode_property(pool, n, k, q, seed, other_types):
    sentences = [
        AnnotatedSentence.from_tokens(
            [f"w{j}" for j in range(max(1, len(labels)))],
            [(j, j + 1, t) for j, t in enumerate(labels)],
            source=f"s:{i}",
        )
        for i, labels in enumerate(pool)
    ]
    try:
        ep = sample_episode(sentences, n, k, q, seed=seed, other_types=other_types, max_attempts=5)
    except SamplingError:
        return
    check_episode(ep, n, k, q)
