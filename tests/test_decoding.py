"""Span-constrained decoding: token bytes, the automaton, the logits processor under every search, the parser."""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
from conftest import build_tiny_causal_lm
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessor, LogitsProcessorList

from cllmfs_hf.data.readers import read_conll
from cllmfs_hf.decoding import (
    SpanConstrainedLogitsProcessor,
    SpanConstraintConfig,
    VocabularyTrie,
    parse_output,
    span_boundaries,
)
from cllmfs_hf.decoding.automaton import RowAutomaton
from cllmfs_hf.template import PREAMBLE, format_completion, prompt_messages

PUNCT = [",", ".", "(", ")", "'s", "-", '"', ";", ">>>", "<<<", "José", "Müller", "北京", "€5", "naïve"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_words(politics_train_head) -> list[str]:
    sentences = read_conll(politics_train_head)
    words = sorted({tok for s in sentences for tok in s.tokens})
    assert len(words) == 728  # the distinct tokens of the excerpt's 40 sentences
    return words


def _prompt_batch(tokenizer, sentences, type_name="person", description="names of people"):
    # left padding for generation, asked per call: the session tokenizer fixtures are shared and stay as they are
    prompts = [
        tokenizer.apply_chat_template(
            prompt_messages(type_name, description, s), add_generation_prompt=True, tokenize=False
        )
        for s in sentences
    ]
    return tokenizer(
        prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
    )


def _tiny(tokenizer, seed=0, family="llama"):
    model = build_tiny_causal_lm(family, len(tokenizer), seed=seed, num_layers=2)
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
    return model.eval()


class _AssertSomethingAllowed(LogitsProcessor):
    """Runs after the constraint: every constrained row must keep at least one finite score (no dead end)."""

    def __call__(self, input_ids, scores):
        assert torch.isfinite(scores).any(dim=-1).all(), "a row has no allowed token (dead end)"
        return scores


def _check_row(proc, row_ids, sentence, config: SpanConstraintConfig):
    """Every property a constrained output must have; returns the parse."""
    text, ended = proc.decode(row_ids)
    result = parse_output(text, sentence, word_boundaries=config.word_boundaries, complete=ended)
    assert result.well_formed, (text, sentence)
    assert result.dropped_not_in_input == 0, (text, sentence)
    if not config.allow_duplicates:
        assert result.dropped_repeats == 0, (text, sentence)
    if ended and not result.dropped_repeats:
        assert text.lstrip(" ") == format_completion(result.texts), (text, result)
    starts, ends = span_boundaries(sentence, config.word_boundaries)
    for (s, e), t in zip(result.spans, result.texts):
        assert sentence[s:e] == t
        assert s in starts and e in ends
        if config.max_span_words is not None:
            assert len(t.split()) <= config.max_span_words
    if config.max_spans is not None:
        assert len(result.spans) <= config.max_spans
    if config.max_spans_per_word is not None:
        assert len(result.spans) <= max(1, math.ceil(config.max_spans_per_word * len(sentence.split())))
    if not config.allow_duplicates:
        assert len(set(result.spans)) == len(result.spans)
    return result


# --------------------------------------------------------------------------------------------------------
# token bytes and the trie
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tok_name", ["smollm2_tokenizer", "sentencepiece_tokenizer"])
def test_token_bytes_reproduce_the_tokenizers_decoding(tok_name, request, real_words):
    tok = request.getfixturevalue(tok_name)
    trie = VocabularyTrie.for_tokenizer(tok)
    assert VocabularyTrie.for_tokenizer(tok) is trie  # cached
    rng = random.Random(0)
    for _ in range(50):
        text = " ".join(rng.choice(real_words + PUNCT) for _ in range(rng.randint(1, 12)))
        ids = tok.encode(text, add_special_tokens=False)
        decoded = trie.decode(ids)
        # SentencePiece's prefix space is the only difference the decoder's Strip removes
        assert decoded.lstrip(" ") == tok.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        ).lstrip(" "), text
    specials = set(tok.all_special_ids)
    assert all(trie.contributions[i] is None for i in specials)


def test_byte_level_pieces_that_are_not_utf8_alone(smollm2_tokenizer):
    tok = smollm2_tokenizer
    trie = VocabularyTrie.for_tokenizer(tok)
    sentence = "Müller met José"
    auto = trie.automaton(sentence, SpanConstraintConfig())
    state = auto.initial
    for b in (PREAMBLE + " <<< M").encode():
        state = auto.step(state, b)
    ids, eos = auto.allowed(state)
    pieces = {trie.contributions[i] for i in ids.tolist()}
    first_byte_of_u = "ü".encode()[:1]
    assert first_byte_of_u in pieces  # half a character is fine where it continues the input
    assert not eos
    state = auto.step(state, first_byte_of_u[0])
    ids, _ = auto.allowed(state)
    assert {trie.contributions[i] for i in ids.tolist()} <= {
        "ü".encode()[1:],
        "ü".encode()[1:] + b"l",
        "ü".encode()[1:] + b"ll",
    } | {p for p in (trie.contributions[i] for i in ids.tolist()) if p and p.startswith("ü".encode()[1:])}


def test_delimiters_merged_with_span_text(smollm2_tokenizer):
    tok = smollm2_tokenizer
    trie = VocabularyTrie.for_tokenizer(tok)
    auto = trie.automaton("Labour won in New York", SpanConstraintConfig())
    state = auto.initial
    for b in (PREAMBLE + " <<<").encode():
        state = auto.step(state, b)
    allowed = set(auto.allowed(state)[0].tolist())
    assert tok.convert_tokens_to_ids("ĠNew") in allowed  # the delimiter's space merged with the span
    assert tok.convert_tokens_to_ids("ĠYork") in allowed
    assert tok.convert_tokens_to_ids("ĠParis") not in allowed
    for b in b" New York":
        state = auto.step(state, b)
    allowed = set(auto.allowed(state)[0].tolist())
    assert tok.convert_tokens_to_ids("Ġ>>>") in allowed
    assert tok.convert_tokens_to_ids("Ġ>>") in allowed
    # the full preamble + spans, tokenized naturally, is accepted token by token
    ids = tok.encode(format_completion(["Labour", "New York"]), add_special_tokens=False)
    state = auto.initial
    for t in ids:
        assert t in set(auto.allowed(state)[0].tolist()), tok.convert_ids_to_tokens([t])
        state = auto.advance(state, t)
    assert auto.allowed(state)[1]  # EOS allowed at the end


def test_duplicates_limited_to_occurrences_and_no_dead_end(smollm2_tokenizer):
    trie = VocabularyTrie.for_tokenizer(smollm2_tokenizer)
    # (no span-count limit here: this sentence of 4 words would allow only 2 spans by default; any order:
    # ordered spans would allow no span after the second North)
    auto = trie.automaton(
        "North and North Korea", SpanConstraintConfig(max_spans_per_word=None, ordered_spans=False)
    )
    state = auto.initial
    for b in (PREAMBLE + " <<< North >>> <<< North >>>").encode():
        state = auto.step(state, b)
    assert state  # 'North' occurs twice
    for b in b" <<< North":
        state = auto.step(state, b)
    # a third 'North' cannot close, but 'North Korea' still can: the state is alive
    ids, eos = auto.allowed(state)
    assert not eos and ids.numel() > 0
    assert not auto.step(auto.step(state, ord(" ")), ord(">"))
    # with duplicates allowed, the third copy is fine
    auto2 = trie.automaton(
        "North and North Korea",
        SpanConstraintConfig(allow_duplicates=True, max_spans_per_word=None, ordered_spans=False),
    )
    state = auto2.initial
    for b in (PREAMBLE + " <<< North >>> <<< North >>> <<< North >>>").encode():
        state = auto2.step(state, b)
    assert auto2.accepting(state)


def test_options_word_limit_max_spans_and_character_spans(smollm2_tokenizer):
    trie = VocabularyTrie.for_tokenizer(smollm2_tokenizer)
    sentence = "the New York Times reported"

    def run(text, **kw):
        auto = trie.automaton(sentence, SpanConstraintConfig(**kw))
        state = auto.initial
        for b in text.encode():
            state = auto.step(state, b)
        return auto, state

    assert run(PREAMBLE + " <<< New York Times >>>")[1]
    assert not run(PREAMBLE + " <<< New York Times >>>", max_span_words=2)[1]
    assert run(PREAMBLE + " <<< New York >>>", max_span_words=2)[1]
    auto, state = run(PREAMBLE + " <<< New >>>", max_spans=1)
    assert auto.accepting(state) and auto.allowed(state)[0].numel() == 0  # only EOS is left
    assert not run(PREAMBLE + " <<< Yor >>>")[1]
    assert run(PREAMBLE + " <<< Yor >>>", word_boundaries=False)[1]
    assert not run(PREAMBLE + " <<< York  >>>", word_boundaries=False)[1]  # never ends with whitespace
    # by default at most ceil(0.5 x 5 words) = 3 spans; None lifts the limit
    three = PREAMBLE + " <<< the >>> <<< New >>> <<< York >>>"
    auto, state = run(three)
    assert auto.span_limit == 3 and auto.accepting(state) and auto.allowed(state)[0].numel() == 0
    auto, state = run(three, max_spans_per_word=None)
    assert auto.span_limit is None and auto.allowed(state)[0].numel() > 0
    assert run(three, max_spans=2, max_spans_per_word=None)[1] == frozenset()


def test_config_validation_messages():
    with pytest.raises(ValueError, match="max_span_words"):
        SpanConstraintConfig(max_span_words=0)
    with pytest.raises(ValueError, match="max_spans"):
        SpanConstraintConfig(max_spans=-1)
    with pytest.raises(ValueError, match="word_boundaries"):
        SpanConstraintConfig(word_boundaries="yes")
    with pytest.raises(ValueError, match="max_spans_per_word must be None or a number > 0, got 0"):
        SpanConstraintConfig(max_spans_per_word=0)


def test_processor_input_errors(smollm2_tokenizer):
    with pytest.raises(TypeError, match=r"\[sentence\]"):
        SpanConstrainedLogitsProcessor(smollm2_tokenizer, "one sentence")
    with pytest.raises(ValueError, match="empty"):
        SpanConstrainedLogitsProcessor(smollm2_tokenizer, [])
    with pytest.raises(TypeError, match=r"sentences\[1\]"):
        SpanConstrainedLogitsProcessor(smollm2_tokenizer, ["a", 3])
    with pytest.raises(TypeError, match="Unknown option"):
        SpanConstrainedLogitsProcessor(smollm2_tokenizer, ["a"], max_words=3)
    proc = SpanConstrainedLogitsProcessor(smollm2_tokenizer, ["a b", "c d"])
    with pytest.raises(ValueError, match="multiple"):
        proc(torch.zeros((3, 4), dtype=torch.long), torch.zeros((3, len(smollm2_tokenizer))))


# --------------------------------------------------------------------------------------------------------
# generation: property test, beams, greedy equivalence
# --------------------------------------------------------------------------------------------------------
_MODELS: dict[tuple[int, int], torch.nn.Module] = {}


def _cached_tiny(tokenizer, seed):
    key = (id(tokenizer), seed)
    if key not in _MODELS:
        _MODELS[key] = _tiny(tokenizer, seed=seed, family=["llama", "qwen2"][seed % 2])
    return _MODELS[key]


@st.composite
def _sentence(draw, words):
    n = draw(st.integers(1, 10))
    parts = [
        draw(st.sampled_from(words)) if draw(st.booleans()) or not PUNCT else draw(st.sampled_from(PUNCT))
        for _ in range(n)
    ]
    text = parts[0]
    for p in parts[1:]:
        text += ("" if draw(st.integers(0, 4)) == 0 else " ") + p
    return text


@pytest.mark.parametrize("tok_name", ["smollm2_tokenizer", "sentencepiece_tokenizer"])
def test_property_constrained_outputs_are_spans_of_the_input(tok_name, request, real_words):
    tok = request.getfixturevalue(tok_name)
    words = real_words[::7]

    # no shrinking phase: a failure is reported with its example at once (shrinking re-runs generation)
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
    )
    @given(
        sentences=st.lists(_sentence(words), min_size=1, max_size=2),
        seed=st.integers(0, 3),
        word_boundaries=st.booleans(),
        max_span_words=st.sampled_from([None, 1, 3]),
        allow_duplicates=st.booleans(),
        max_spans=st.sampled_from([None, 2]),
        temperature=st.sampled_from([1.0, 4.0, 20.0]),
        top_p=st.sampled_from([1.0, 0.9]),
    )
    def check(
        sentences, seed, word_boundaries, max_span_words, allow_duplicates, max_spans, temperature, top_p
    ):
        config = SpanConstraintConfig(
            word_boundaries=word_boundaries,
            max_span_words=max_span_words,
            allow_duplicates=allow_duplicates,
            max_spans=max_spans,
        )
        model = _cached_tiny(tok, seed)
        enc = _prompt_batch(tok, sentences)
        proc = SpanConstrainedLogitsProcessor(tok, sentences, config)
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no escaped rows
            out = model.generate(
                **enc,
                logits_processor=LogitsProcessorList([proc, _AssertSomethingAllowed()]),
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=48,
                num_return_sequences=2,
            )
        generated = out[:, enc["input_ids"].shape[1] :].tolist()
        for r, row in enumerate(generated):
            _check_row(proc, row, sentences[r // 2], config)

    check()


def test_beam_search_three_beams_batch_of_two_lengths(smollm2_tokenizer):
    tok = smollm2_tokenizer
    sentences = ["Ada Lovelace met Charles Babbage in London in 1833 .", "Bob won"]
    enc = _prompt_batch(tok, sentences)
    assert (enc["attention_mask"][1] == 0).any()  # the shorter row is left padded
    config = SpanConstraintConfig()
    for seed in (1, 2):
        model = _tiny(tok, seed=seed)
        proc = SpanConstrainedLogitsProcessor(tok, sentences, config)
        out = model.generate(
            **enc,
            logits_processor=LogitsProcessorList([proc, _AssertSomethingAllowed()]),
            num_beams=3,
            num_return_sequences=3,
            max_new_tokens=40,
            do_sample=False,
        )
        assert out.shape[0] == 6
        for r, row in enumerate(out[:, enc["input_ids"].shape[1] :].tolist()):
            _check_row(proc, row, sentences[r // 3], config)


def _train_to_answer(tokenizer, sentences, answers, steps=120, seed=0):
    """A tiny model trained until its greedy answers are the given completions (a legal output)."""
    model = _tiny(tokenizer, seed=seed)
    model.train()
    rows = []
    for s, a in zip(sentences, answers):
        prompt = tokenizer.apply_chat_template(
            prompt_messages("person", "names of people", s), add_generation_prompt=True, tokenize=False
        )
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p_ids + c_ids, [-100] * len(p_ids) + c_ids))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(seed)
    for _ in range(steps):
        for ids, labels in rows:
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    return model.eval()


def test_greedy_with_processor_equals_greedy_without_when_already_legal(smollm2_tokenizer):
    tok = smollm2_tokenizer
    sentences = ["Ada met Bob in Paris .", "The Labour Party won"]
    answers = [format_completion(["Ada", "Bob"]), format_completion([])]
    model = _train_to_answer(tok, sentences, answers)
    enc = _prompt_batch(tok, sentences)
    free = model.generate(**enc, do_sample=False, max_new_tokens=40)
    proc = SpanConstrainedLogitsProcessor(tok, sentences)
    constrained = model.generate(
        **enc, do_sample=False, max_new_tokens=40, logits_processor=LogitsProcessorList([proc])
    )
    plen = enc["input_ids"].shape[1]
    for r in range(2):
        text, ended = proc.decode(free[r, plen:].tolist())
        parsed = parse_output(text, sentences[r], complete=ended)
        assert ended and parsed.well_formed and parsed.dropped == 0, text  # the free output is legal ...
    assert torch.equal(free, constrained)  # ... so the constraint changes nothing
    # and the same processor object serves a second generate call (state is reset on a new prompt)
    again = model.generate(
        **enc, do_sample=False, max_new_tokens=40, logits_processor=LogitsProcessorList([proc])
    )
    assert torch.equal(again, constrained)


def test_constraint_repairs_an_illegal_free_output(smollm2_tokenizer):
    tok = smollm2_tokenizer
    sentences = ["Ada met Bob in Paris ."]
    model = _train_to_answer(tok, sentences, [format_completion(["Alice"])], steps=80)
    enc = _prompt_batch(tok, sentences)
    plen = enc["input_ids"].shape[1]
    free = model.generate(**enc, do_sample=False, max_new_tokens=40)[0, plen:].tolist()
    proc = SpanConstrainedLogitsProcessor(tok, sentences)
    text, ended = proc.decode(free)
    free_parse = parse_output(text, sentences[0], complete=ended)
    assert free_parse.dropped_not_in_input == 1 and free_parse.spans == []  # 'Alice' is dropped and counted
    out = model.generate(
        **enc, do_sample=False, max_new_tokens=40, logits_processor=LogitsProcessorList([proc])
    )
    _check_row(proc, out[0, plen:].tolist(), sentences[0], SpanConstraintConfig())


# --------------------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------------------
def test_parser_maps_kth_copy_to_kth_occurrence():
    sentence = "Bob met Bob and Bob ."
    r = parse_output(format_completion(["Bob", "Bob", "Bob", "Bob"]), sentence)
    assert r.spans == [(0, 3), (8, 11), (16, 19)]
    assert r.dropped_repeats == 1 and r.dropped_not_in_input == 0
    assert all(sentence[s:e] == "Bob" for s, e in r.spans)


def test_parser_unconstrained_text_drops_and_counts():
    sentence = "Ada met Bob in Paris ."
    r = parse_output("Sure! <<<Ada>>> and <<< Alice >>> and <<< Pari >>> <<<  >>>", sentence)
    assert not r.well_formed
    assert r.spans == [(0, 3)]
    assert r.dropped_not_in_input == 3
    assert parse_output("no entities here", sentence).spans == []


def test_parser_input_containing_the_close_delimiter():
    sentence = "a >>> b"
    text = format_completion(["a >>> b", "a"])
    r = parse_output(text, sentence)
    assert r.well_formed and r.texts == ["a >>> b", "a"] and r.spans == [(0, 7), (0, 1)]


def test_parser_truncated_output():
    sentence = "New York and Paris"
    r = parse_output(format_completion(["Paris"]) + " <<< New Yo", sentence, complete=False)
    assert r.well_formed and not r.complete and r.spans == [(13, 18)]
    r = parse_output(PREAMBLE[:10], sentence, complete=False)
    assert r.well_formed and r.spans == []
    with pytest.raises(TypeError):
        parse_output(None, sentence)


def test_span_boundaries_word_and_character_modes():
    assert span_boundaries("Paris, France") == ([0, 5, 7], [5, 6, 13])
    starts, ends = span_boundaries("a b", word_boundaries=False)
    assert starts == [0, 2] and ends == [1, 3]


def test_slow_path_for_characters_no_token_can_produce(sentencepiece_tokenizer):
    """The SentencePiece fixture has no byte fallback: characters outside its vocabulary cannot be generated,
    so spans containing them must never be started (token-level liveness), and decoding never dead-ends."""
    tok = sentencepiece_tokenizer
    sentences = ["Paris 北京 Berlin", "Rome and 北"]
    config = SpanConstraintConfig(word_boundaries=False)
    proc = SpanConstrainedLogitsProcessor(tok, sentences, config)
    assert not proc.automata[0].coverable
    auto = proc.automata[0]
    state = auto.initial
    for b in (PREAMBLE + " <<< Paris ").encode():
        state = auto.step(state, b)
    pieces = {auto.trie.contributions[i] for i in auto.allowed(state)[0].tolist()}
    assert pieces and not any("北".encode()[:1] in p for p in pieces)  # 'Paris 北...' cannot be continued
    enc = _prompt_batch(tok, sentences)
    for seed in range(3):
        model = _tiny(tok, seed=seed)
        torch.manual_seed(seed)
        out = model.generate(
            **enc,
            logits_processor=LogitsProcessorList([proc, _AssertSomethingAllowed()]),
            do_sample=True,
            temperature=10.0,
            max_new_tokens=40,
        )
        for r, row in enumerate(out[:, enc["input_ids"].shape[1] :].tolist()):
            result = _check_row(proc, row, sentences[r], config)
            assert all("北" not in t for t in result.texts)


@pytest.mark.parametrize("tok_name", ["smollm2_tokenizer", "sentencepiece_tokenizer"])
def test_preamble_in_prompt_outputs_continue_the_preamble_with_spans_of_the_input(tok_name, request):
    """With the preamble prefilled in the prompt, the output starts with an item or ends at once; preamble +
    output is a legal answer (sampled at high temperature, batch of two lengths, left padding)."""
    tok = request.getfixturevalue(tok_name)
    sentences = ["Ada Lovelace met Charles Babbage in London .", "Rain in Spain ."]
    config = SpanConstraintConfig(preamble_in_prompt=True)
    prompts = [
        tok.apply_chat_template(
            prompt_messages("person", "names of people", s), add_generation_prompt=True, tokenize=False
        )
        + PREAMBLE
        for s in sentences
    ]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    proc = SpanConstrainedLogitsProcessor(tok, sentences, config)
    first_ids, eos_ok = proc.automata[0].allowed(proc.automata[0].initial)
    assert eos_ok  # a negative answer is the preamble alone
    assert all(
        tok.decode([i]).startswith(" ") or tok.convert_ids_to_tokens(i).startswith(("Ġ", "▁"))
        for i in first_ids.tolist()
    )
    model = _tiny(tok, seed=3)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no escaped rows
        out = model.generate(
            **enc,
            logits_processor=LogitsProcessorList([proc, _AssertSomethingAllowed()]),
            do_sample=True,
            temperature=20.0,
            max_new_tokens=40,
            num_return_sequences=3,
        )
    generated = out[:, enc["input_ids"].shape[1] :].tolist()
    # its own clock: one call per generated column, each masking every row
    assert proc.row_steps == out.shape[0] * len(generated[0]) and proc.seconds > 0
    for r, row in enumerate(generated):
        text, ended = proc.decode(row)
        assert text == "" or text.startswith(" <<< "), text
        sentence = sentences[r // 3]
        result = parse_output(PREAMBLE + text, sentence, complete=ended)
        assert result.well_formed and result.dropped_not_in_input == 0, text
        if ended:
            assert PREAMBLE + text == format_completion(result.texts)
        assert all(sentence[s:e] == t for (s, e), t in zip(result.spans, result.texts))


@pytest.mark.parametrize("tok_name", ["smollm2_tokenizer", "sentencepiece_tokenizer"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"preamble_in_prompt": True},
        {"word_boundaries": False},
        {"max_span_words": 2, "max_spans": 3},
        {"allow_duplicates": True, "allow_leading_space": False},
    ],
)
def test_fast_allowed_sets_equal_the_plain_trie_walk(tok_name, options, request, politics_train_head):
    """The per-configuration allowed sets (span text read along the sentence) equal a plain walk of the
    vocabulary trie, on every state that random legal outputs pass through (real sentences, one with a
    repeated word so that the duplicate budget matters)."""
    tok = request.getfixturevalue(tok_name)
    config = SpanConstraintConfig(**options)
    trie = VocabularyTrie.for_tokenizer(tok)
    real = [s.text for s in read_conll(politics_train_head) if len(s.tokens) >= 15]
    sentences = [*real[:2], real[2] + " " + real[2]]
    rng = random.Random(0)
    checked = 0
    for sentence in sentences:
        auto = RowAutomaton(trie, sentence, config)
        assert auto.coverable
        for _walk in range(12):  # many walks: states of one place under several histories share sets
            state = auto.initial
            for _step in range(30):
                ids, eos_ok = auto.allowed(state)
                assert ids.tolist() == auto.allowed_by_walk(state), (sentence, state)
                checked += 1
                if eos_ok and (ids.numel() == 0 or rng.random() < 0.05):
                    break
                token = rng.choice(ids.tolist())
                after = auto.advance(state, token)
                assert after == auto.advance_by_bytes(state, trie.contributions[token]), (
                    sentence,
                    state,
                    token,
                )
                state = after
                assert state
    assert checked > 100


def test_ordered_spans_follow_each_other_without_overlap(smollm2_tokenizer):
    """By default each span starts at or after the end of the one before it (the order the training records
    list mentions in): an earlier, overlapping or repeated-start span cannot follow; ordered_spans=False allows
    any order. The parser maps each span to the earliest occurrence after the one before, as the automaton did."""
    from cllmfs_hf.template import parse_output

    tok = smollm2_tokenizer
    trie = VocabularyTrie.for_tokenizer(tok)
    sentence = "Lincoln met Grant ; Lincoln replaced Grant"

    def accepts(spans, **options):
        auto = trie.automaton(sentence, SpanConstraintConfig(**options))
        state = auto.initial
        for t in tok.encode(format_completion(spans), add_special_tokens=False):
            if t not in set(auto.allowed(state)[0].tolist()):
                return False
            state = auto.advance(state, t)
        return auto.allowed(state)[1]  # the end may come

    assert accepts(["Lincoln", "Grant", "Lincoln", "Grant"])
    assert accepts(["Grant", "Lincoln"])  # the second Lincoln
    assert not accepts(["Lincoln", "Lincoln met"])  # overlaps the span before it
    assert not accepts(["Grant", "Lincoln", "Grant", "Lincoln"])  # no Lincoln after the last Grant
    assert not accepts(["Lincoln replaced", "Grant", "Lincoln"])
    assert accepts(["Lincoln", "Lincoln met"], ordered_spans=False)
    assert accepts(["Grant", "Lincoln", "Grant", "Lincoln"], ordered_spans=False)
    parsed = parse_output(format_completion(["Grant", "Lincoln"]), sentence, ordered=True)
    assert parsed.spans == [(12, 17), (20, 27)]
    assert parse_output(format_completion(["Grant", "Lincoln"]), sentence).spans == [(12, 17), (0, 7)]


def test_reused_buffers_give_the_masks_of_fresh_ones_through_ended_escaped_and_dropped_rows(
    smollm2_tokenizer, politics_test_head
):
    """The processor resets a reused output buffer only where it wrote before. Driven step by step with random
    scores, its outputs must equal those of a twin whose outputs are all held (so each of its calls fills a
    fresh -inf buffer): through a row forced off the constraint (a whole row copied, reset at the next use), a
    row that ended (then only EOS is allowed), and the escaped row dropped between calls (``keep_rows``: the
    first rows of the same buffer). An output the caller still holds is never written again."""
    tok = smollm2_tokenizer
    sentences = [s.text for s in read_conll(politics_test_head)[:6]]
    config = SpanConstraintConfig(preamble_in_prompt=True)
    eos = tok.eos_token_id
    proc = SpanConstrainedLogitsProcessor(tok, sentences, config)
    twin = SpanConstrainedLogitsProcessor(tok, sentences, config)
    held = []  # every output of the twin
    gen = torch.Generator().manual_seed(0)
    ids = torch.zeros((len(sentences), 3), dtype=torch.long)  # a stand-in prompt: the answers start after it
    last = None  # (the last output, a copy of it): the caller holds the last output only
    pointers: list[int] = []
    for step in range(20):
        scores = torch.randn((ids.shape[0], len(tok)), generator=gen)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the escaped row
            out = proc(ids, scores.clone())
            held.append(twin(ids, scores.clone()))
        assert torch.equal(out, held[-1]), f"step {step}: the reused buffer differs from a fresh one"
        if last is not None:
            assert torch.equal(*last), "an output still held was overwritten"
            assert out.data_ptr() != last[0].data_ptr()
        if len(pointers) >= 2:
            assert out.data_ptr() == pointers[-2], "the buffer before last was not reused"
        pointers.append(out.data_ptr())
        last = (out, out.clone())
        if step > 6:  # row 1 ended at step 6 (row 0 once row 0 left): EOS alone
            assert torch.isfinite(out[1 if step <= 9 else 0]).nonzero().squeeze(1).tolist() == [eos]
        if 4 < step <= 9:  # the escaped row is copied whole
            assert torch.isfinite(out[0]).all()
        chosen = out.argmax(-1)
        if step == 4:  # a forbidden token on row 0: it leaves the constraint, its whole row is copied
            chosen[0] = int(torch.isinf(out[0]).nonzero()[0])
        if step == 6:
            chosen[1] = eos
        ids = torch.cat([ids, chosen[:, None]], dim=1)
        if step == 9:  # the escaped row leaves the batch (the rows after it move up into its buffer row)
            keep = list(range(1, ids.shape[0]))
            proc.keep_rows(keep)
            twin.keep_rows(keep)
            ids = ids[keep]
    assert proc.num_escaped_rows == 1
    assert not torch.isfinite(out).all(dim=1).any()  # every row left is masked


def test_a_loop_that_drives_its_rows_gets_the_masks_of_input_ids_calls(smollm2_tokenizer, politics_test_head):
    """add_rows / advance_rows / mask_scores / keep_rows (the continuous-batching loop's way of driving the
    processor) give every row the mask a processor called on that row's ``input_ids`` gives, through rows
    admitted mid-way, an ended row and dropped rows; misuse is refused with the fix."""
    tok = smollm2_tokenizer
    sentences = [s.text for s in read_conll(politics_test_head)[:5]]
    config = SpanConstraintConfig(preamble_in_prompt=True)
    eos = tok.eos_token_id
    driven = SpanConstrainedLogitsProcessor(tok, sentences[:2], config)
    rows = [0, 1]  # the sentence of each driven row
    generated: dict[int, list[int]] = {0: [], 1: []}
    # each row's twin: a processor of its sentence alone, called on the row's input_ids at every step
    alone = {s: SpanConstrainedLogitsProcessor(tok, [sentences[s]], config) for s in range(5)}
    gen = torch.Generator().manual_seed(1)
    for step in range(12):
        if step == 3:  # two records join the running rows
            driven.add_rows(sentences[2:4])
            rows += [2, 3]
            generated.update({2: [], 3: []})
        if step == 7:
            driven.add_rows(sentences[4:])
            rows.append(4)
            generated[4] = []
        scores = torch.randn((len(rows), len(tok)), generator=gen)
        out = driven.mask_scores(scores.clone())
        for r, s in enumerate(rows):
            ids = torch.tensor([[0, 0, *generated[s]]])  # a stand-in prompt, then the row's answer
            assert torch.equal(out[r], alone[s](ids, scores[r : r + 1].clone())[0]), (step, s)
        chosen = out.argmax(-1).tolist()
        if step == 4:
            chosen[1] = eos  # a row ends: it allows EOS alone from now on
        for r, s in enumerate(rows):
            generated[s].append(chosen[r])
        driven.advance_rows(chosen)
        if step == 5:  # the first row leaves the batch
            driven.keep_rows(list(range(1, len(rows))))
            rows = rows[1:]
    assert torch.isfinite(out[0]).nonzero().squeeze(1).tolist() == [eos]  # sentence 1's row ended at step 4
    with pytest.raises(ValueError, match="advance_rows got 1 tokens for 4 rows"):
        driven.advance_rows([eos])
    with pytest.raises(ValueError, match="mask_scores got 2 rows of scores for 4 rows"):
        driven.mask_scores(torch.zeros((2, len(tok))))
    called = SpanConstrainedLogitsProcessor(tok, sentences[:1], config)
    called(torch.zeros((1, 3), dtype=torch.long), torch.zeros((1, len(tok))))
    with pytest.raises(ValueError, match="this processor was called on input_ids: make a new one"):
        called.add_rows(sentences[1:2])
