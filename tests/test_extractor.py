"""NERExtractor: batching, windows, overlap policy, bad input, evaluation, loading from an adapter folder."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from conftest import assert_same_predictions, build_tiny_causal_lm, mentions_of
from transformers import LogitsProcessor

from cllmfs_hf.data.readers import read_dataset
from cllmfs_hf.data.types import AnnotatedSentence, Mention, sentences_to_dataset
from cllmfs_hf.decoding import SpanConstrainedLogitsProcessor, VocabularyTrie, span_boundaries
from cllmfs_hf.extractor import NERExtractor
from cllmfs_hf.template import INPUT_PREFIX, PREAMBLE, format_completion


def _tiny(tokenizer, seed=0, num_layers=2):
    model = build_tiny_causal_lm("llama", len(tokenizer), seed=seed, num_layers=num_layers)
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
    return model.eval()


def _peaked(model, scale: float = 40.0):
    """The tiny model with its output weights scaled, so that its next-token distributions are far from uniform
    and differ between prompts (a random tiny model's are all close to 1/vocab)."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(scale)
    return model


def _sharp_attention(model):
    """The tiny model with its attention projections scaled, so that attention is peaked, depends on the
    positions and weighs in the logits (a random tiny model attends almost uniformly and its logits follow
    the current token: shifted positions or stray columns would go unseen)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(30.0)
            elif name.endswith(("v_proj.weight", "o_proj.weight")):
                param.mul_(10.0)
        # every rotary frequency fast, so that a position off by one changes the scores
        inv_freq = model.model.rotary_emb.inv_freq
        inv_freq.copy_(torch.linspace(1.0, 0.3, inv_freq.numel()))
    return model


class Oracle(LogitsProcessor):
    """A test driver standing in for a well-trained model: it reads each row's prompt (type and sentence) and
    steers generation, among the tokens the constraint allows, to the answer listing every word-aligned
    occurrence of that type's keywords. It sees only what a model sees (the prompt and the prefix)."""

    def __init__(self, tokenizer, keywords: dict[str, list[str]]):
        self.tokenizer = tokenizer
        self.trie = VocabularyTrie.for_tokenizer(tokenizer)
        self.keywords = keywords
        self.prompt: torch.Tensor | None = None
        self.prompt_len = 0
        self.targets: list[bytes] = []
        self.queries: list[tuple[str, str]] = []

    def _target(self, prompt_text: str) -> bytes:
        target = format_completion(self._mentions(prompt_text))
        if prompt_text.endswith(PREAMBLE):  # a prefilled preamble: the answer goes on after it
            target = target[len(PREAMBLE) :]
        return target.encode()

    def _mentions(self, prompt_text: str) -> list[str]:
        type_name = re.search(r"the entity of (.+?) in the input", prompt_text).group(1)
        # decoded without special tokens (the pads, which may sit between the shared prompt prefix and the rest)
        sentence = prompt_text.split(INPUT_PREFIX, 1)[1].rsplit("\nassistant\n", 1)[0]
        self.queries.append((type_name, sentence))
        starts, ends = span_boundaries(sentence)
        found = []
        for kw in self.keywords.get(type_name, []):
            found += [(s, kw) for s in starts if sentence.startswith(kw, s) and s + len(kw) in ends]
        return [kw for _, kw in sorted(found)]

    def __call__(self, input_ids, scores):
        new_call = (
            self.prompt is None
            or input_ids.shape[0] != self.prompt.shape[0]
            or input_ids.shape[1] <= self.prompt.shape[1]
            or not torch.equal(input_ids[:, : self.prompt.shape[1]], self.prompt)
        )
        if new_call:
            self.prompt = input_ids.clone()
            self.prompt_len = input_ids.shape[1]
            self.queries = []
            self.targets = [
                self._target(self.tokenizer.decode(row, skip_special_tokens=True)) for row in input_ids
            ]
        bias = torch.zeros_like(scores)
        for r, row in enumerate(input_ids[:, self.prompt_len :].tolist()):
            done = self.trie.decode(row).encode()
            target = self.targets[r]
            if done == target:
                bias[r, self.tokenizer.eos_token_id] = 1e4
                continue
            if not target.startswith(done):
                continue  # off track (cannot happen when the constraint allows the target)
            node, best = self.trie.root, None
            for b in target[len(done) :]:  # the longest token that continues the target
                node = node.get(b)
                if node is None:
                    break
                best = node.get(-1, [best])[0]
            if best is not None:
                bias[r, best] = 1e4
        return scores + bias


@pytest.fixture(scope="module")
def tiny_extractor(smollm2_tokenizer):
    model = _tiny(smollm2_tokenizer)
    return NERExtractor(model, smollm2_tokenizer, ["LOC", "ORG"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------------
def test_bad_input_gives_clear_errors(tiny_extractor):
    ex = tiny_extractor
    with pytest.raises(TypeError, match=r"predict\(\[text\]\)"):
        ex.predict("Ada met Bob")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        ex.predict(["ok", None])
    with pytest.raises(ValueError, match="empty"):
        ex.predict(["ok"], [])
    with pytest.raises(TypeError, match=r"entity_types\[0\]"):
        ex.predict(["ok"], [3])
    with pytest.raises(ValueError, match="empty label"):
        ex.predict(["ok"], [" "])
    with pytest.raises(TypeError, match=r"\['LOC'\]"):
        ex.predict(["ok"], "LOC")
    with pytest.raises(ValueError, match="Unknown entity type.*allow_unknown_types"):
        ex.predict(["ok"], ["spaceship"])
    with pytest.raises(ValueError, match="batch_size"):
        ex.predict(["ok"], batch_size=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        ex.predict(["ok"], max_new_tokens=0)
    with pytest.raises(ValueError, match="overlap_policy"):
        NERExtractor(ex.model, ex.tokenizer, overlap_policy="first")
    no_types = NERExtractor(ex.model, ex.tokenizer)
    with pytest.raises(ValueError, match="No entity types"):
        no_types.predict(["ok"])
    with pytest.raises(TypeError, match="AnnotatedSentence"):
        ex.evaluate(["plain text"])


def test_empty_and_whitespace_texts_give_empty_results_without_generation(tiny_extractor):
    assert tiny_extractor.predict(["", "   \n\t"]) == [[], []]
    assert tiny_extractor.last_stats.records == 0 and tiny_extractor.last_stats.empty_texts == 2
    assert tiny_extractor.predict([]) == []


def test_unknown_type_allowed_on_request(tiny_extractor):
    out = tiny_extractor.predict(
        ["Ada met Bob ."], ["spaceship"], allow_unknown_types=True, max_new_tokens=24
    )
    assert len(out) == 1


# --------------------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------------------
def test_random_model_predictions_are_spans_sorted_by_position(tiny_extractor):
    texts = ["The Labour Party won in New York , said José Müller .", "Ada met Bob", "Paris"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a random model may hit the token cap
        out = tiny_extractor.predict(texts, batch_size=4, do_sample=True, temperature=5.0, max_new_tokens=40)
    stats = tiny_extractor.last_stats
    assert (
        stats.records == 6 and stats.batches == 2 and stats.malformed == 0 and stats.dropped_not_in_input == 0
    )
    for text, mentions in zip(texts, out):
        assert [(m["start"], m["end"]) for m in mentions] == sorted((m["start"], m["end"]) for m in mentions)
        for m in mentions:
            assert set(m) == {"start", "end", "text", "label", "score"}
            assert 0.0 < m["score"] <= 1.0
            assert text[m["start"] : m["end"]] == m["text"] and m["label"] in {"LOC", "ORG"}


def test_beam_search_through_predict(tiny_extractor):
    texts = ["Ada met Bob in Paris .", "Labour won"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = tiny_extractor.predict(texts, ["LOC"], num_beams=3, max_new_tokens=30)
    assert tiny_extractor.last_stats.malformed == 0
    for text, mentions in zip(texts, out):
        assert all(text[m["start"] : m["end"]] == m["text"] for m in mentions)
    with pytest.raises(ValueError, match="num_return_sequences"):
        tiny_extractor.predict(texts, ["LOC"], num_beams=2, num_return_sequences=2)


def test_oracle_model_batched_equals_one_by_one_and_kth_occurrence(tiny_extractor):
    oracle = Oracle(tiny_extractor.tokenizer, {"location": ["Paris", "New York"], "organisation": ["Labour"]})
    texts = ["Paris is not New York , but Paris .", "Labour won", "Nothing here ."]
    batched = tiny_extractor.predict(texts, batch_size=8, logits_processor=[oracle])
    single = [tiny_extractor.predict([t], batch_size=1, logits_processor=[oracle])[0] for t in texts]
    assert_same_predictions(batched, single)
    assert mentions_of(batched)[0] == [
        {"start": 0, "end": 5, "text": "Paris", "label": "LOC"},
        {"start": 13, "end": 21, "text": "New York", "label": "LOC"},
        {"start": 28, "end": 33, "text": "Paris", "label": "LOC"},
    ]
    assert mentions_of(batched)[1] == [{"start": 0, "end": 6, "text": "Labour", "label": "ORG"}]
    assert batched[2] == []
    assert tiny_extractor.last_stats.truncated == 0


def test_long_text_is_split_into_windows_and_merged_with_correct_offsets(smollm2_tokenizer):
    model = _tiny(smollm2_tokenizer)
    ex = NERExtractor(model, smollm2_tokenizer, ["LOC"], max_context=160, window_overlap=12)
    oracle = Oracle(smollm2_tokenizer, {"location": ["Paris", "New York"]})
    chunks = [
        "They met in Paris on Monday and flew to New York the next day for talks .",
        "Nothing happened in between .",
        "Later the delegation returned to Paris , then New York again .",
    ]
    text = " ".join(chunks[i % 3] for i in range(12))
    expected = sorted((m.start(), m.end()) for m in re.finditer(r"\bParis\b|\bNew York\b", text))
    out = ex.predict([text], logits_processor=[oracle], max_new_tokens=40)[0]
    stats = ex.last_stats
    assert stats.split_texts == 1 and stats.windows > 3  # the text did not fit one window
    assert len({q[1] for q in oracle.queries}) >= 1
    assert [(m["start"], m["end"]) for m in out] == expected  # nothing lost, nothing doubled
    assert all(text[m["start"] : m["end"]] == m["text"] for m in out)
    # every character of the text was shown to the model in some window
    windows = ex._windows(text, ex._window_budget(["LOC"], 40))
    covered = set()
    for s, e in windows:
        covered.update(range(s, e))
    assert all(i in covered for i, c in enumerate(text) if not c.isspace())
    assert all(windows[i][0] < windows[i - 1][1] for i in range(1, len(windows)))  # they overlap


def test_overlap_policy_for_different_types(smollm2_tokenizer):
    model = _tiny(smollm2_tokenizer)
    keywords = {"location": ["New York"], "organisation": ["New York Times"]}
    text = ["The New York Times wrote ."]
    keep = NERExtractor(model, smollm2_tokenizer, ["LOC", "ORG"])
    out = keep.predict(text, logits_processor=[Oracle(smollm2_tokenizer, keywords)])[0]
    assert [(m["text"], m["label"]) for m in out] == [("New York", "LOC"), ("New York Times", "ORG")]
    longest = NERExtractor(model, smollm2_tokenizer, ["LOC", "ORG"], overlap_policy="longest")
    out = longest.predict(text, logits_processor=[Oracle(smollm2_tokenizer, keywords)])[0]
    assert [(m["text"], m["label"]) for m in out] == [("New York Times", "ORG")]


def test_unconstrained_decoding_drops_and_counts_spans_not_in_the_text(smollm2_tokenizer):
    model = _tiny(smollm2_tokenizer)
    ex = NERExtractor(model, smollm2_tokenizer, ["LOC"])
    oracle = Oracle(smollm2_tokenizer, {"location": ["Paris", "Atlantis"]})
    # the oracle's target for "Atlantis" is only reachable without the constraint when it is in the text,
    # so feed it a text without it and check the free answer's bogus span is dropped, not invented
    oracle._mentions = lambda prompt: ["Paris", "Atlantis"]
    out = ex.predict(["We flew to Paris ."], logits_processor=[oracle], constrained=False, max_new_tokens=40)
    assert mentions_of(out) == [[{"start": 11, "end": 16, "text": "Paris", "label": "LOC"}]]
    assert out[0][0]["score"] is None  # free text that left the template has no item bounds to score
    assert ex.last_stats.dropped_not_in_input == 1
    out = ex.predict(["We flew to Paris ."], logits_processor=[oracle], constrained=True, max_new_tokens=40)
    # with the constraint, 'Atlantis' cannot even start: Paris, then only spans of the text
    assert {"start": 11, "end": 16, "text": "Paris", "label": "LOC"} in mentions_of(out)[0]
    assert all("We flew to Paris ."[m["start"] : m["end"]] == m["text"] for m in out[0])
    assert ex.last_stats.dropped_not_in_input == 0 and ex.last_stats.malformed == 0


def test_truncated_answers_are_reported(tiny_extractor, smollm2_tokenizer):
    # the answer " <<< Ada >>> <<< Paris >>>" takes more than 3 tokens (the preamble is in the prompt)
    oracle = Oracle(smollm2_tokenizer, {"location": ["Ada", "Paris"]})
    with pytest.warns(RuntimeWarning, match="max_new_tokens"):
        tiny_extractor.predict(
            ["Ada met Bob in Paris ."], ["LOC"], max_new_tokens=3, logits_processor=[oracle]
        )
    assert tiny_extractor.last_stats.truncated == 1


def test_evaluate_and_score(smollm2_tokenizer):
    model = _tiny(smollm2_tokenizer)
    ex = NERExtractor(model, smollm2_tokenizer, ["LOC", "PER"])
    sentences = [
        AnnotatedSentence.from_tokens(["Ada", "flew", "to", "Paris", "."], [(0, 1, "PER"), (3, 4, "LOC")]),
        AnnotatedSentence.from_tokens(["Paris", "is", "big"], [(0, 1, "LOC")]),
    ]
    oracle = Oracle(smollm2_tokenizer, {"location": ["Paris"], "person": ["Bob"]})
    scores = ex.evaluate(sentences, logits_processor=[oracle])
    assert (scores.tp, scores.fp, scores.fn) == (2, 0, 1)
    assert scores.per_type["LOC"].f1 == 1.0 and scores.per_type["PER"].recall == 0.0
    same = ex.evaluate(sentences_to_dataset(sentences), logits_processor=[oracle])
    assert same.to_dict() == scores.to_dict()
    acc = ex.score(sentences[:1], logits_processor=[oracle]).merge(
        ex.score(sentences[1:], logits_processor=[oracle])
    )
    assert acc.result().to_dict() == scores.to_dict()
    mentions = ex.predict_mentions(["Paris"], ["LOC"], logits_processor=[oracle])
    assert mentions == [[Mention(0, 5, "LOC")]]


def test_progress_bar_for_long_runs(tiny_extractor, capsys):
    tiny_extractor.predict(["a b", "c d"], ["LOC"], max_new_tokens=2, progress=True)
    assert "NER records" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------
def test_from_pretrained_adapter_folder_brings_its_types(tmp_path, smollm2_tokenizer):
    from peft import LoraConfig, get_peft_model

    from cllmfs_hf.hub import NERAdapterConfig, save_adapter

    base = _tiny(smollm2_tokenizer, seed=5)
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    smollm2_tokenizer.save_pretrained(base_dir)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    cfg = NERAdapterConfig(
        entity_types=["PER", "politicalparty"], type_descriptions={"PER": "people by name"}
    )
    folder = save_adapter(peft_model, smollm2_tokenizer, tmp_path / "adapter", cfg, base_model=str(base_dir))
    ex = NERExtractor.from_pretrained(str(folder))
    assert ex.entity_types == ["PER", "politicalparty"]
    assert ex.descriptions["PER"] == "people by name"
    assert ex.type_names["politicalparty"] == "political party"
    oracle = Oracle(ex.tokenizer, {"political party": ["Labour"]})
    out = ex.predict(["Labour won ."], logits_processor=[oracle])
    assert mentions_of(out) == [[{"start": 0, "end": 6, "text": "Labour", "label": "politicalparty"}]]
    with pytest.raises(ValueError, match="Unknown entity type"):
        ex.predict(["x"], ["LOC"])


@pytest.mark.slow
def test_default_model_end_to_end():
    ex = NERExtractor.from_pretrained()
    assert ex.model.config.num_hidden_layers == 30
    texts = ["Angela Merkel met Emmanuel Macron in Berlin .", "Labour won ."]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the untrained model may run to the cap
        out = ex.predict(texts, ["person"], batch_size=2, max_new_tokens=32)
    stats = ex.last_stats
    assert stats.records == 2 and stats.batches == 1 and stats.malformed == 0 and stats.dropped == 0
    for text, mentions in zip(texts, out):
        for m in mentions:
            assert text[m["start"] : m["end"]] == m["text"] and m["label"] == "person"


def test_prefix_cache_gives_the_same_predictions(smollm2_tokenizer):
    model = _tiny(smollm2_tokenizer, seed=7)
    texts = ["Ada met Bob in Paris .", "The Labour Party won in New York , said José Müller .", "Rain"]
    cached = NERExtractor(model, smollm2_tokenizer, ["LOC", "PER"])
    plain = NERExtractor(model, smollm2_tokenizer, ["LOC", "PER"], prefix_cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a = cached.predict(texts, batch_size=2, max_new_tokens=24)
        b = plain.predict(texts, batch_size=2, max_new_tokens=24)
        c = cached.predict(texts, batch_size=2, max_new_tokens=24, num_beams=2)
        d = plain.predict(texts, batch_size=2, max_new_tokens=24, num_beams=2)
    assert cached._prefix_verified is True
    assert_same_predictions(a, b)
    assert_same_predictions(c, d)


@pytest.mark.slow
def test_prefilled_preamble_gives_the_answers_of_the_generated_preamble(
    tmp_path, tmp_path_factory, monkeypatch, politics_train_head, politics_test_head
):
    """A (briefly) trained adapter on the real default model, real sentences: with the preamble in the prompt
    every greedy answer equals the one decoded with the preamble generated token by token (its cap raised by
    the preamble's tokens), at fewer generated tokens.

    The precondition is checked too: the trained model generates exactly the preamble tokens that training
    put after the prompt. (The untrained base does not: under the constraint it spells the preamble with other
    tokens, e.g. ' ' + 'entities', and then answers differently; prefilling gives it the trained tokens.)
    """
    from peft import LoraConfig
    from test_models import default_model_cache

    from cllmfs_hf.config import CLLMFSConfig
    from cllmfs_hf.data.readers import read_conll
    from cllmfs_hf.data.records import build_records, records_to_dataset
    from cllmfs_hf.models import load_base_model, load_tokenizer
    from cllmfs_hf.trainer import CLLMFSTrainer

    monkeypatch.setenv("CLLMFS_CACHE", str(default_model_cache(tmp_path_factory)["cache"]))
    types = ["politician", "country"]
    records = build_records(read_conll(politics_train_head)[:8], types, seed=0)
    tokenizer = load_tokenizer(padding_side="right")
    trainer = CLLMFSTrainer(
        load_base_model(),
        args=CLLMFSConfig(
            output_dir=str(tmp_path / "run"),
            report_to="none",
            use_cpu=True,
            max_steps=4,
            per_device_train_batch_size=4,
            learning_rate=1e-3,
            save_strategy="no",
            activation_checkpointing=False,
            disable_tqdm=True,
            contrastive_weight=0.0,
            adversarial="none",
        ),
        train_dataset=records_to_dataset(records),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    model = trainer.model.eval()
    tokenizer.padding_side = "left"
    texts = [s.text for s in read_dataset(politics_test_head)[:6]]
    prefilled = NERExtractor(model, tokenizer, types)
    generated = NERExtractor(model, tokenizer, types, prefill_preamble=False)

    # precondition: the trained model spells the preamble with the tokens training put after the prompt
    prompt = generated._prompt_ids(types[0], texts[0])
    preamble_ids = prefilled._prompt_ids(types[0], texts[0])[len(prompt) :]
    assert len(preamble_ids) == generated._preamble_tokens
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            logits_processor=[
                SpanConstrainedLogitsProcessor(
                    tokenizer, [texts[0]], generated.constraint, eos_token_id=generated.eos_token_ids
                )
            ],
            max_new_tokens=len(preamble_ids),
            do_sample=False,
            pad_token_id=generated.pad_token_id,
        )
    assert out[0, len(prompt) :].tolist() == preamble_ids

    cap = 24
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = generated.predict(texts, batch_size=6, max_new_tokens=cap + len(preamble_ids))
        got = prefilled.predict(texts, batch_size=6, max_new_tokens=cap)
    assert_same_predictions(got, want)
    records_run = len(texts) * len(types)
    assert prefilled.last_stats.records == generated.last_stats.records == records_run
    assert prefilled.last_stats.generated_tokens == generated.last_stats.generated_tokens - records_run * len(
        preamble_ids
    )


@pytest.mark.parametrize("num_beams", [1, 2])
def test_recorded_log_probabilities_equal_a_teacher_forced_forward(smollm2_tokenizer, num_beams):
    """TokenLogProbs reads the model's own log-probability of every generated token, from the scores of the
    same decoding (greedy and beam search, which reorders rows), before the constraint masks them."""
    from transformers import LogitsProcessorList

    from cllmfs_hf.extractor.scoring import TokenLogProbs

    model = _peaked(_tiny(smollm2_tokenizer, seed=4))
    ex = NERExtractor(model, smollm2_tokenizer, ["LOC"])
    texts = ["Ada met Bob in Paris .", "Rain in New York"]
    prompts = [ex._prompt_ids("LOC", t) for t in texts]
    width = max(map(len, prompts))
    ids = torch.full((2, width), ex.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
    recorder = TokenLogProbs(width, rows_per_record=num_beams)
    constraint = SpanConstrainedLogitsProcessor(
        smollm2_tokenizer, texts, ex.constraint, eos_token_id=ex.eos_token_ids
    )
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            logits_processor=LogitsProcessorList([recorder, constraint]),
            max_new_tokens=12,
            num_beams=num_beams,
            do_sample=False,
            pad_token_id=ex.pad_token_id,
            eos_token_id=ex.eos_token_ids,
        )
        for r, p in enumerate(prompts):
            generated = out[r, width:].tolist()
            n = next((i + 1 for i, t in enumerate(generated) if t in ex.eos_token_ids), len(generated))
            full = torch.tensor([p + generated[:n]])
            logits = model(input_ids=full).logits[0, len(p) - 1 : len(p) - 1 + n].float()
            want = torch.log_softmax(logits, -1)[torch.arange(n), torch.tensor(generated[:n])]
            got = torch.tensor(recorder.logprobs(generated, record=r)[:n])
            if num_beams > 1:
                got = got[: n - 1]  # a beam that ended is stored without its end-of-sequence step
                want = want[: n - 1]
            # left padding and the incremental cache change the logits in their last bits (|logp| ~ 10 here)
            torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-3)


def test_item_scores_multiply_the_tokens_of_each_item():
    import math

    from cllmfs_hf.extractor.scoring import item_scores
    from cllmfs_hf.template import parse_output

    sentence = "Ada met Bob ."
    answer = PREAMBLE + " <<< Ada >>> <<< Bob >>>"
    parsed = parse_output(answer, sentence)
    assert parsed.items == ["Ada", "Bob"] and parsed.span_items == [0, 1]
    # generated after a prefilled preamble: " <<" "< Ada" " >>> <" "<< Bob" " >>>"
    pieces = [" <<", "< Ada", " >>> <", "<< Bob", " >>>"]
    logprobs = [-0.1, -0.2, -0.3, -0.4, -0.5]
    scores = item_scores(parsed, answer, len(PREAMBLE), [len(x) for x in pieces], logprobs)
    assert scores == pytest.approx([math.exp(-0.1 - 0.2 - 0.3), math.exp(-0.3 - 0.4 - 0.5)])


def test_threshold_drops_low_scores_and_is_chosen_on_labelled_sentences(smollm2_tokenizer):
    model = _tiny(smollm2_tokenizer, seed=2)
    ex = NERExtractor(model, smollm2_tokenizer, ["LOC"])
    texts = ["Paris is not New York , but Rome .", "Rain in Spain ."]
    oracle = Oracle(smollm2_tokenizer, {"location": ["Paris", "New York", "Rome", "Rain", "Spain"]})
    everything = ex.predict(texts, logits_processor=[oracle])
    scores = sorted(m["score"] for found in everything for m in found)
    assert len(scores) == 5 and all(0.0 < s <= 1.0 for s in scores)
    kept = ex.predict(texts, logits_processor=[oracle], threshold=scores[2])
    assert sorted(m["score"] for found in kept for m in found) == pytest.approx(scores[2:], rel=1e-3)
    with pytest.raises(ValueError, match=r"threshold must be None or a probability in \[0, 1\]"):
        ex.predict(texts, threshold=1.5)

    gold = [
        AnnotatedSentence.from_text(texts[0], [(0, 5, "LOC"), (13, 21, "LOC"), (28, 32, "LOC")]),
        AnnotatedSentence.from_text(texts[1], [(8, 13, "LOC")]),
    ]
    threshold, f1 = ex.choose_threshold(gold, logits_processor=[oracle])
    from cllmfs_hf.evaluation import evaluate_sentences

    for candidate in [0.0, *scores]:
        found = ex.predict(texts, logits_processor=[oracle], threshold=candidate)
        assert (
            evaluate_sentences(
                gold, [[Mention(m["start"], m["end"], m["label"]) for m in f] for f in found]
            ).f1
            <= f1 + 1e-9
        )
    as_mentions = [[Mention(m["start"], m["end"], m["label"]) for m in f] for f in everything]
    assert f1 >= evaluate_sentences(gold, as_mentions).f1


def test_dropping_ended_rows_gives_the_answers_and_scores_of_generate(smollm2_tokenizer, politics_test_head):
    """Greedy decoding that drops each ended row from its batch (the default) gives the answers and scores
    of ``model.generate``, which keeps every row to the end: real sentences, rows that end early, late and at
    the cap, with and without the prefix cache."""
    model = _peaked(_tiny(smollm2_tokenizer, seed=7))
    texts = [s.text for s in read_dataset(politics_test_head)[:8]]
    types = ["person", "country", "politicalparty"]
    for prefix_cache in (True, False):
        kept = NERExtractor(
            model, smollm2_tokenizer, types, prefix_cache=prefix_cache, drop_finished_rows=False
        )
        dropped = NERExtractor(model, smollm2_tokenizer, types, prefix_cache=prefix_cache)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = kept.predict(texts, batch_size=8, max_new_tokens=16)
            got = dropped.predict(texts, batch_size=8, max_new_tokens=16)
        assert_same_predictions(got, want, log_tolerance=1e-3)
        assert dropped.last_stats.generated_tokens == kept.last_stats.generated_tokens
        for ex in (kept, dropped):  # both paths report the constraint's own time, over every token it masked
            assert ex.last_stats.constraint_seconds > 0
            assert ex.last_stats.constrained_row_steps >= ex.last_stats.generated_tokens
        # the test means something: some answers ended early and some ran to the cap
        assert 0 < dropped.last_stats.truncated < dropped.last_stats.records
        assert sum(map(len, got)) > 0


def _stream_requests(ex, texts, caps):
    from cllmfs_hf.extractor.greedy import GreedyRequest

    return [GreedyRequest(ex._prompt_ids("LOC", t), cap, t) for t, cap in zip(texts, caps)]


def _run_stream(model, ex, requests, batch_size, counters=None):
    from cllmfs_hf.extractor.greedy import greedy_stream

    with torch.inference_mode():
        out = greedy_stream(
            model,
            requests,
            batch_size=batch_size,
            pad_token_id=ex.pad_token_id,
            eos_token_ids=ex.eos_token_ids,
            device="cpu",
            tokenizer=ex.tokenizer,
            constraint=ex.constraint,
            counters=counters,
        )
        return {i: (tokens, logprobs) for i, tokens, logprobs in out}


def test_greedy_stream_joins_records_into_running_rows_with_their_own_answers(smollm2_tokenizer, monkeypatch):
    """Continuous batching: records admitted into the rows others freed (their caches joined to the running
    batch's, left-padded) get the tokens each would get decoded alone, with the model's own log-probabilities
    (a teacher-forced forward), and each stops at its own cap."""
    from cllmfs_hf.extractor import greedy

    model = _sharp_attention(_peaked(_tiny(smollm2_tokenizer, seed=4)))
    ex = NERExtractor(model, smollm2_tokenizer, ["LOC"])
    texts = [
        "Ada met Bob in Paris .",
        "Rain in New York",
        "Oslo",
        "The river Thames runs through London .",
        "Rome",
    ]
    caps = [12, 3, 12, 10, 12]
    requests = _stream_requests(ex, texts, caps)
    joins = []
    real_join = greedy._join
    monkeypatch.setattr(
        greedy,
        "_join",
        lambda cache, mask, parts: joins.append(cache is not None) or real_join(cache, mask, parts),
    )
    monkeypatch.setattr(greedy, "_SPARE_COLUMNS", 2)  # the joined caches run out of spare columns and regrow
    monkeypatch.setattr(greedy, "_FORWARD_COST_TOKENS", 0)  # each admission splits into forwards per length
    counters = greedy.StreamCounters()
    streamed = _run_stream(model, ex, requests, batch_size=2, counters=counters)
    # records joined rows still decoding, a forward each
    assert any(joins) and len(counters.admissions) == len(texts)
    # the constraint's clock: every chosen token was masked (and ended rows waiting to be dropped too)
    assert counters.constraint_seconds > 0
    assert counters.constrained_row_steps >= sum(len(t) for t, _ in streamed.values())
    alone = {i: _run_stream(model, ex, [req], batch_size=1)[0] for i, req in enumerate(requests)}
    assert sorted(streamed) == list(range(len(texts)))
    for i, req in enumerate(requests):
        tokens, logprobs = streamed[i]
        assert tokens == alone[i][0]
        torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(alone[i][1]), rtol=2e-3, atol=1e-3)
        assert len(tokens) <= req.max_new_tokens
        ended = tokens[-1] in ex.eos_token_ids
        assert ended or len(tokens) == req.max_new_tokens
        n, p = len(tokens), req.prompt_ids
        with torch.inference_mode():
            logits = (
                model(input_ids=torch.tensor([p + tokens])).logits[0, len(p) - 1 : len(p) - 1 + n].float()
            )
        want = torch.log_softmax(logits, -1)[torch.arange(n), torch.tensor(tokens)]
        torch.testing.assert_close(torch.tensor(logprobs), want, rtol=2e-3, atol=1e-3)
    assert len(streamed[1][0]) == 3  # its own cap, not the longest of its batch
    assert len({len(t) for t, _ in streamed.values()}) > 1  # rows left the batch at different steps


def test_joined_caches_mask_their_padding_and_trimmed_caches_keep_every_attended_column():
    """_join left-pads the narrower cache with masked columns and keeps each row's own keys and values in
    order; _trim drops only the leading columns no row attends to."""
    from transformers.cache_utils import DynamicCache

    from cllmfs_hf.extractor.greedy import _join, _joinable, _trim

    def cache(rows, width, start):
        c = DynamicCache()
        for layer in range(2):
            kv = (
                torch.arange(start, start + rows * width, dtype=torch.float).reshape(rows, 1, width, 1)
                + layer
            )
            c.update(kv.clone(), -kv.clone(), layer)
        return c

    old, new = cache(2, 3, 100), cache(1, 5, 200)
    assert _joinable(old) and not _joinable(None)
    old_mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    new_mask = torch.tensor([[0, 1, 1, 1, 1]])
    joined, mask = _join(old, old_mask, [(new, new_mask)])
    assert joined is old
    assert mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0, 1, 1, 1, 1]]
    for layer in range(2):
        keys, values = old.layers[layer].keys, old.layers[layer].values
        assert keys.shape == (3, 1, 5, 1) and torch.equal(values, -keys)
        assert keys[:2, 0, 2:, 0].tolist() == [
            [100 + layer, 101 + layer, 102 + layer],
            [103 + layer, 104 + layer, 105 + layer],
        ]
        assert keys[2, 0, :, 0].tolist() == [200 + layer + i for i in range(5)]
        assert keys[:2, 0, :2].abs().sum() == 0  # the padding columns are zeros, and masked
    old.batch_select_indices(torch.tensor([0, 1]))
    trimmed = _trim(old, mask[:2])
    assert trimmed.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert old.layers[0].keys[:, 0, :, 0].tolist() == [[100, 101, 102], [103, 104, 105]]
    assert _trim(old, trimmed) is trimmed  # nothing to drop


def test_prompts_are_encoded_in_the_length_groups_that_cost_least():
    """_length_groups splits an admission into forwards of similar prompt lengths: every prompt once, longest
    first, at the least cost over every split of the sorted lengths (rows x longest prompt + a forward's cost)."""
    import itertools
    import random

    from cllmfs_hf.extractor.greedy import _FORWARD_COST_TOKENS, _length_groups

    def cost(groups, lengths):
        return sum(len(g) * max(lengths[i] for i in g) + _FORWARD_COST_TOKENS for g in groups)

    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(10, 130) for _ in range(rng.randint(1, 8))]
        groups = _length_groups(lengths)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        flat = [lengths[i] for g in groups for i in g]
        assert flat == sorted(lengths, reverse=True)
        ranked = sorted(lengths, reverse=True)
        best = min(
            cost([list(range(a, b)) for a, b in zip((0, *cuts), (*cuts, len(ranked)))], ranked)
            for k in range(len(ranked))
            for cuts in itertools.combinations(range(1, len(ranked)), k)
        )
        assert cost(groups, lengths) == best
    assert len(_length_groups([127, 125, 60, 58, 57, 55])) == 2  # the long tail is not padded to 127
    assert len(_length_groups([60, 58, 57, 55])) == 1


def test_greedy_stream_without_a_joinable_cache_admits_only_into_an_empty_batch(
    smollm2_tokenizer, monkeypatch
):
    """A cache that cannot be joined (not a plain DynamicCache) drains each batch before the next one starts,
    with the same answers."""
    from cllmfs_hf.extractor import greedy

    model = _peaked(_tiny(smollm2_tokenizer, seed=4))
    ex = NERExtractor(model, smollm2_tokenizer, ["LOC"])
    texts = ["Ada met Bob in Paris .", "Rain in New York", "Oslo", "Rome in spring", "Bern"]
    requests = _stream_requests(ex, texts, [10] * 5)
    joined = _run_stream(model, ex, requests, batch_size=2)
    monkeypatch.setattr(greedy, "_joinable", lambda cache: False)
    monkeypatch.setattr(greedy, "_join", lambda *a: pytest.fail("a cache was joined"))  # nor made spare
    counters = greedy.StreamCounters()
    drained = _run_stream(model, ex, requests, batch_size=2, counters=counters)
    assert counters.admissions == [2, 2, 1]
    # each batch's processor was counted, though each drained batch had its own
    assert counters.constrained_row_steps >= sum(len(t) for t, _ in drained.values())
    assert {i: t for i, (t, _) in drained.items()} == {i: t for i, (t, _) in joined.items()}


def test_plain_greedy_tells_when_generate_would_add_nothing(smollm2_tokenizer):
    """The row-dropping loop serves only plain greedy search: sampling, beams, other generate options and a
    generation config that adds a logits processor (a repetition penalty) go through model.generate."""
    from cllmfs_hf.extractor.greedy import plain_greedy

    model = _tiny(smollm2_tokenizer)
    assert plain_greedy(model, {})
    assert plain_greedy(model, {"do_sample": False, "num_beams": 1})
    assert not plain_greedy(model, {"num_beams": 2})
    assert not plain_greedy(model, {"do_sample": True})
    assert not plain_greedy(model, {"logits_processor": []})
    model.generation_config.repetition_penalty = 1.3
    assert not plain_greedy(model, {})


def _random_lora(tokenizer, seed=3, save_base_to=None):
    """A tiny PeftModel whose LoRA deltas are not zero (init_lora_weights=False), so merging changes weights;
    its base model saved to ``save_base_to`` first, if given."""
    from peft import LoraConfig, get_peft_model

    base = _tiny(tokenizer, seed=seed)
    if save_base_to is not None:
        base.save_pretrained(save_base_to)
        tokenizer.save_pretrained(save_base_to)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    return get_peft_model(base, config).eval()


def test_lora_merged_gives_the_same_logits_and_unmerges_the_adapter(smollm2_tokenizer):
    """Inside ``lora_merged`` every LoRA layer is merged into its base weights (the same logits as unmerged); on
    exit, even after an error, the model is unmerged with its weights as before. Disabled adapters are left
    alone (merging them would put the deltas back in)."""
    from peft.tuners.lora import LoraLayer

    from cllmfs_hf.extractor.lora_merge import lora_merged

    model = _random_lora(smollm2_tokenizer)
    ids = torch.tensor([smollm2_tokenizer("Ada met Bob in Paris .")["input_ids"]])
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 6
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with lora_merged(model) as merged_model:
            assert merged_model is model and all(m.merged for m in layers)
            base_weight = layers[0].get_base_layer().weight
            assert not torch.allclose(base_weight, weights[next(k for k in weights if "base_layer" in k)])
            merged = model(input_ids=ids).logits
        torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
        with pytest.raises(RuntimeError, match="inside"):
            with lora_merged(model):
                raise RuntimeError("inside")
        after = model(input_ids=ids).logits
    assert not any(m.merged for m in layers)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=1e-5, atol=1e-6, msg=k)
    torch.testing.assert_close(after, unmerged, rtol=1e-5, atol=1e-5)
    with model.disable_adapter(), torch.no_grad():
        base_logits = model(input_ids=ids).logits
        with lora_merged(model):
            assert not any(m.merged for m in layers)
            torch.testing.assert_close(model(input_ids=ids).logits, base_logits)


def test_predict_on_a_peft_model_equals_the_merged_extractor_and_leaves_the_adapter(
    tmp_path, smollm2_tokenizer
):
    """``predict`` on a PeftModel (as the evaluation after training runs it) gives the answers of the same
    adapter loaded with ``from_pretrained`` (merged for good: no LoRA layer left), and the PeftModel is
    unchanged afterwards."""
    from peft.tuners.lora import LoraLayer

    from cllmfs_hf.hub import NERAdapterConfig, save_adapter

    base_dir = tmp_path / "base"
    model = _random_lora(smollm2_tokenizer, seed=11, save_base_to=base_dir)
    folder = save_adapter(
        model,
        smollm2_tokenizer,
        tmp_path / "adapter",
        NERAdapterConfig(entity_types=["person"]),
        base_model=str(base_dir),
    )
    texts = ["Ada met Bob in Paris .", "The Labour Party won in New York , said José Müller ."]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    live = NERExtractor(model, smollm2_tokenizer, ["person"]).predict(texts, max_new_tokens=12)
    assert all(
        torch.equal(v, weights[k]) or torch.allclose(v, weights[k], atol=1e-6)
        for k, v in model.state_dict().items()
    )
    assert any(isinstance(m, LoraLayer) for m in model.modules())
    loaded = NERExtractor.from_pretrained(str(folder))
    assert not any(isinstance(m, LoraLayer) for m in loaded.model.modules())
    assert mentions_of(loaded.predict(texts, max_new_tokens=12)) == mentions_of(live)
