"""CLLMFSDataCollator: token positions under right/left padding and truncation, with both tokenizer families."""

from __future__ import annotations

import logging

import pytest
import torch

from cllmfs_hf.collator import CLLMFSDataCollator
from cllmfs_hf.config import NegativeSamplingConfig
from cllmfs_hf.data.readers import read_conll
from cllmfs_hf.data.records import build_records, records_to_dataset
from cllmfs_hf.data.types import AnnotatedSentence


@pytest.fixture(scope="module")
def politics_records(politics_train_head):
    sentences = read_conll(politics_train_head)[:12]
    return build_records(sentences)


@pytest.fixture(params=["smollm2", "sentencepiece"])
def tokenizer(request):
    return request.getfixturevalue(f"{request.param}_tokenizer")


def _token_chars(tokenizer, record):
    """Independent view of the rendered text: per token, the set of user-content character indices it covers."""
    text = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=False)
    base = text.index(record["prompt"][0]["content"])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    chars = [set(range(s - base, e - base)) for s, e in enc["offset_mapping"]]
    return enc["input_ids"], chars


def _assert_span_covers(chars, span, start, end, what):
    """Tokens [span) are exactly the tokens that cover a non-space character of content[start:end)."""
    s, e = span
    target = set(range(start, end))
    assert chars[s] & target and chars[e - 1] & target, f"{what}: edge tokens do not overlap the characters"
    assert not (chars[s - 1] & target), f"{what}: the token before the span also covers it"
    if e < len(chars):
        assert not (chars[e] & target), f"{what}: the token after the span also covers it"


def _check_batch(tokenizer, records, batch, collator):
    for b, record in enumerate(records):
        row = batch["input_ids"][b]
        attn = batch["attention_mask"][b].bool()
        shift = int((~attn).nonzero().max()) + 1 if collator.padding_side == "left" and not attn.all() else 0
        ids, chars = _token_chars(tokenizer, record)
        assert row[attn].tolist() == ids
        off = record["sentence_offset"]
        a = batch["cl_anchor_span"][b].tolist()
        _assert_span_covers(chars, (a[0] - shift, a[1] - shift), *record["type_span"], "anchor")
        got = [tuple(x) for x in batch["cl_positive_spans"][b].tolist() if x[0] >= 0]
        assert len(got) == len(record["spans"])
        for (s, e), (cs, ce) in zip(got, record["spans"]):
            _assert_span_covers(chars, (s - shift, e - shift), off + cs, off + ce, "mention")
            # the tokens decode to the mention text (whitespace and the Metaspace marker aside)
            decoded = tokenizer.decode(row[s:e]).replace("\u2581", " ").strip()
            assert decoded.replace(" ", "") == record["sentence"][cs:ce].replace(" ", "")
        # labels: -100 on the prompt, the completion tokens afterwards
        labels = batch["labels"][b][attn]
        trained = labels[labels != -100]
        assert tokenizer.decode(trained).replace("\u2581", " ").strip().startswith("I can extract entities")
        first = int((labels != -100).nonzero().min())
        assert all(int(x) < first + shift for x in batch["cl_positive_spans"][b].flatten() if x >= 0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_positions_under_padding(tokenizer, politics_records, side):
    records = politics_records[:9]
    assert sum(len(r["spans"]) for r in records) >= 3
    collator = CLLMFSDataCollator(tokenizer, padding_side=side)
    batch = collator(records)
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # the padding is exercised
    _check_batch(tokenizer, records, batch, collator)
    if side == "left":
        pos = batch["position_ids"]
        assert torch.equal(pos[batch["attention_mask"].bool()], torch.cat([torch.arange(n) for n in lengths]))


@pytest.mark.parametrize("side", ["right", "left"])
def test_prompt_end_anchor_is_the_last_prompt_token(tokenizer, politics_records, side):
    """anchor='prompt_end': the token the answer is generated from (the one before the first label)."""
    records = politics_records[:6]
    batch = CLLMFSDataCollator(tokenizer, padding_side=side, anchor="prompt_end")(records)
    plain = CLLMFSDataCollator(tokenizer, padding_side=side)(records)
    for key in ("input_ids", "labels", "cl_positive_spans", "cl_negative_spans"):
        assert torch.equal(batch[key], plain[key])  # only the anchor moves
    for b in range(len(records)):
        labels = batch["labels"][b]
        first_label = int((labels != -100).nonzero().min())
        assert batch["cl_anchor_span"][b].tolist() == [first_label - 1, first_label]
        prompt = tokenizer.apply_chat_template(
            records[b]["prompt"], tokenize=False, add_generation_prompt=True
        )
        last = tokenizer(prompt, add_special_tokens=False)["input_ids"][-1]
        assert int(batch["input_ids"][b, first_label - 1]) == last
    with pytest.raises(ValueError, match=r"anchor must be one of \['type_name', 'prompt_end'\]"):
        CLLMFSDataCollator(tokenizer, anchor="last")


def test_left_and_right_point_at_the_same_tokens(tokenizer, politics_records):
    records = politics_records[:6]
    right = CLLMFSDataCollator(tokenizer, padding_side="right")(records)
    left = CLLMFSDataCollator(tokenizer, padding_side="left")(records)
    for b in range(len(records)):
        for key in ("cl_positive_spans", "cl_negative_spans"):
            for r_span, l_span in zip(
                right[key][b].reshape(-1, 2).tolist(), left[key][b].reshape(-1, 2).tolist()
            ):
                assert (r_span[0] < 0) == (l_span[0] < 0)
                if r_span[0] >= 0:
                    assert right["input_ids"][b, r_span[0] : r_span[1]].tolist() == (
                        left["input_ids"][b, l_span[0] : l_span[1]].tolist()
                    )


def test_negatives(tokenizer):
    s = AnnotatedSentence.from_tokens(
        "The Social Democratic Party won in Bavaria and Hesse last year .".split(),
        [(1, 4, "politicalparty"), (6, 7, "location"), (8, 9, "location")],
    )
    record = build_records([s], ["politicalparty"])[0]
    collator = CLLMFSDataCollator(tokenizer, negatives=NegativeSamplingConfig(non_entity_negatives=3))
    enc = collator.encode(record)
    ids, chars = _token_chars(tokenizer, record)
    (pos,) = enc.positives
    negs = enc.negatives[0]
    off = record["sentence_offset"]
    sent = set(range(off, off + len(record["sentence"])))
    mention_tokens = [
        {i for i, c in enumerate(chars) if c & set(range(off + a, off + b))}
        for a, b in record["spans"] + record["other_spans"]
    ]
    others = {(min(t), max(t) + 1) for t in mention_tokens[1:]}  # the two locations as token spans
    assert others <= set(negs)  # type negatives
    boundary = [n for n in negs if n not in others and (n[0] == pos[0] or n[1] == pos[1])]
    assert boundary and all(1 <= abs(n[0] - pos[0]) + abs(n[1] - pos[1]) <= 2 for n in boundary)
    non_entity = [n for n in negs if n not in others and n not in boundary]
    assert len(non_entity) == 3
    for n in negs:
        assert pos != n and n[1] > n[0]
        assert all(chars[i] & sent for i in range(n[0], n[1]))  # inside the sentence
    for n in non_entity:
        assert not any(set(range(*n)) & t for t in mention_tokens)
    # deterministic and independent of the batch it is in
    assert collator.encode(record).negatives == enc.negatives
    assert CLLMFSDataCollator(
        tokenizer, negatives=NegativeSamplingConfig(non_entity_negatives=3, max_negatives=2)
    ).encode(record).negatives == [negs[:2]]


def test_truncation_drops_cut_mentions(tokenizer, politics_records, caplog):
    collator = CLLMFSDataCollator(tokenizer, max_length=None)
    record = next(r for r in politics_records if len(r["spans"]) >= 2)
    full = collator.encode(record)
    first, second = full.positives[0], full.positives[1]
    # cut inside the second mention's tokens (or right before it when it is one token)
    limit = second[0] + 1 if second[1] - second[0] > 1 else second[0]
    assert limit >= first[1]
    cut = CLLMFSDataCollator(tokenizer, max_length=limit)
    with caplog.at_level(logging.WARNING, logger="cllmfs_hf.collator"):
        batch = cut([record])
    kept = [tuple(x) for x in batch["cl_positive_spans"][0].tolist() if x[0] >= 0]
    assert kept == [p for p in full.positives if p[1] <= limit]
    assert second not in kept and first in kept
    assert batch["input_ids"].shape[1] == limit
    assert int(batch["cl_negative_spans"].max()) <= limit
    assert cut.stats["dropped_mentions"] == len(full.positives) - len(kept) >= 1
    assert cut.stats["completion_truncated"] == 1  # the completion is after the sentence: all gone
    assert (batch["labels"] == -100).all()
    assert "completion entirely cut" in caplog.text and "cut by max_length" in caplog.text
    # the audit sees the same
    counts = cut.audit([record, politics_records[0]])
    assert counts["completion_truncated"] >= 1 and counts["dropped_mentions"] >= 1
    # anchor cut: no pair survives
    anchor_cut = CLLMFSDataCollator(tokenizer, max_length=full.anchor[0] + 1).encode(record)
    assert anchor_cut.anchor is None and anchor_cut.positives == []


def test_partial_completion_truncation_keeps_labels(tokenizer, politics_records):
    collator = CLLMFSDataCollator(tokenizer, max_length=None)
    record = politics_records[0]
    full = collator.encode(record)
    first_label = next(i for i, x in enumerate(full.labels) if x != -100)
    enc = CLLMFSDataCollator(tokenizer, max_length=first_label + 2).encode(record)
    assert not enc.completion_truncated and enc.labels == full.labels[: first_label + 2]
    assert enc.positives == full.positives


def test_matches_trl_tokenization(smollm2_tokenizer, politics_records, tiny_model_factory, tmp_path):
    from trl import SFTConfig, SFTTrainer

    records = politics_records[:6]
    trainer = SFTTrainer(
        tiny_model_factory("llama", smollm2_tokenizer),
        args=SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False, use_cpu=True),
        train_dataset=records_to_dataset(records),
        processing_class=smollm2_tokenizer,
    )
    prepared = {tuple(row["input_ids"]): row["labels"] for row in trainer.train_dataset}
    collator = CLLMFSDataCollator(smollm2_tokenizer)
    for record in records:
        enc = collator.encode(record)
        assert prepared[tuple(enc.input_ids)] == enc.labels


def test_clear_errors(smollm2_tokenizer_dir, politics_records):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    collator = CLLMFSDataCollator(tok)
    bad = dict(politics_records[0])
    del bad["type_span"]
    with pytest.raises(KeyError, match="type_span"):
        collator([bad])
    with pytest.raises(ValueError, match="empty batch"):
        collator([])
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}\n{% endfor %}"
    with pytest.raises(ValueError, match="verbatim"):
        CLLMFSDataCollator(tok)([politics_records[0]])
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        CLLMFSDataCollator(tok)
    with pytest.raises(ValueError, match="padding_side"):
        CLLMFSDataCollator(AutoTokenizer.from_pretrained(smollm2_tokenizer_dir), padding_side="middle")
