"""CLLMFSConfig and CLLMFSTrainer on tiny random models (Llama, Qwen2, Mistral, Gemma) built from configs."""

from __future__ import annotations

import math

import pytest
import torch

from cllmfs_hf.collator import CLLMFSDataCollator
from cllmfs_hf.config import CLLMFSConfig, resolve_layer_index
from cllmfs_hf.data.readers import read_conll
from cllmfs_hf.data.records import build_records, label_set, records_to_dataset
from cllmfs_hf.losses import contrastive_loss_terms
from cllmfs_hf.trainer import CLLMFSTrainer, find_decoder_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def politics(politics_train_head):
    """The first 40 CrossNER politics train sentences: every test here slices at most [:40], and all 9 of the
    file's types occur in them, so label_set(politics) is the full file's."""
    return read_conll(politics_train_head)


@pytest.fixture(scope="module")
def records(politics):
    return build_records(politics[:16], negative_ratio=0.2, seed=0)


def _config(tmp_path, **overrides) -> CLLMFSConfig:
    base = dict(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=False,
        seed=0,
        max_length=512,
        dataloader_num_workers=0,
        disable_tqdm=True,
        # The mechanics tests pin the term settings they were written for (the library's defaults come from the
        # dev study and are checked in test_config_defaults_and_validation): raw states, no warm-up, FGM on.
        contrastive_weight=0.1,
        contrastive_centering="none",
        contrastive_warmup_ratio=0.0,
        adversarial="fgm",
    )
    base.update(overrides)
    return CLLMFSConfig(**base)


def _lora(**kw):
    from peft import LoraConfig

    return LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "lora_dropout": 0.0, **kw})


def _trainer(model, tokenizer, records, args, **kw):
    return CLLMFSTrainer(
        model, args=args, train_dataset=records_to_dataset(records), processing_class=tokenizer, **kw
    )


# ---- config ----------------------------------------------------------------------------------------------
def test_config_defaults_and_validation(tmp_path):
    cfg = CLLMFSConfig(output_dir=str(tmp_path), report_to="none")
    assert cfg.remove_unused_columns is False and cfg.dataset_kwargs == {"skip_prepare_dataset": True}
    # the dev study's defaults: a centred, warmed-up InfoNCE term at weight 1.0; FGM off (one flag away)
    assert cfg.contrastive_enabled and not cfg.adversarial_enabled
    assert (cfg.contrastive_weight, cfg.contrastive_centering, cfg.contrastive_warmup_ratio) == (
        1.0,
        "prompt_mean",
        0.3,
    )
    assert CLLMFSConfig(output_dir=str(tmp_path), report_to="none", adversarial="fgm").adversarial_enabled
    # the run report names the objective: each combination of the two terms
    objectives = {
        (w, adv): CLLMFSConfig(
            output_dir=str(tmp_path), report_to="none", contrastive_weight=w, adversarial=adv
        ).training_objective
        for w in (0.0, 1.0)
        for adv in ("none", "fgm")
    }
    assert objectives == {
        (0.0, "none"): "plain LoRA SFT, LM loss only",
        (0.0, "fgm"): "CLLMFS: LM + FGM",
        (1.0, "none"): "CLLMFS: LM + InfoNCE",
        (1.0, "fgm"): "CLLMFS: LM + InfoNCE + FGM",
    }
    assert (
        CLLMFSConfig(
            output_dir=str(tmp_path), report_to="none", remove_unused_columns=True
        ).remove_unused_columns
        is False
    )
    bad = [
        (dict(packing=True), "packing=False"),
        (dict(padding_free=True), "padding_free=False"),
        (dict(contrastive_layer=1.5), r"\(0, 1\]"),
        (dict(contrastive_layer=0.0), r"\(0, 1\]"),
        (dict(contrastive_temperature=0.0), "contrastive_temperature"),
        (dict(contrastive_pooling="max"), "contrastive_pooling"),
        (
            dict(contrastive_anchor="cls"),
            r"contrastive_anchor='cls'; choose one of \['type_name', 'prompt_end'\]",
        ),
        (dict(contrastive_centering="whiten"), "contrastive_centering='whiten'"),
        (dict(contrastive_warmup_ratio=1.0), r"contrastive_warmup_ratio must be in \[0, 1\)"),
        (dict(adversarial_epsilon_scale="rms"), "adversarial_epsilon_scale='rms'"),
        (dict(contrastive_weight=-1.0), "contrastive_weight"),
        (dict(adversarial="pgd"), "adversarial="),
        (dict(adversarial_epsilon=0.0), "adversarial_epsilon"),
        (dict(adversarial_norm="batch"), "adversarial_norm"),
        (dict(adversarial_contrastive=True), "adversarial_contrastive=True .* needs adversarial='fgm'"),
        (
            dict(adversarial_contrastive=True, adversarial="fgm", contrastive_weight=0.0),
            r"contrastive_weight=0.0\). Turn both terms on, or set adversarial_contrastive=False",
        ),
        (dict(boundary_shift=0), "boundary_negatives=False"),
        (dict(max_negatives=0), "max_negatives"),
        (dict(dataset_kwargs={"skip_prepare_dataset": False}), "skip_prepare_dataset"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            CLLMFSConfig(output_dir=str(tmp_path), report_to="none", **kwargs)
    assert [resolve_layer_index(x, 4) for x in (0.75, 1.0, 0.1, 0, -1, 2, 3.0)] == [2, 3, 0, 0, 3, 2, 3]
    with pytest.raises(ValueError, match="out of range"):
        resolve_layer_index(4, 4)


# ---- gradients: only LoRA, with FGM, under every checkpointing mode --------------------------------------
@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("checkpointing", ["off", "non-reentrant", "reentrant"])
def test_only_lora_trains_with_fgm(
    family, checkpointing, sentencepiece_tokenizer, tiny_model_factory, records, tmp_path
):
    from transformers import TrainerCallback

    model = tiny_model_factory(family, sentencepiece_tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ckpt = dict(activation_checkpointing=checkpointing != "off")
    if checkpointing != "off":
        ckpt["activation_checkpointing_kwargs"] = {"use_reentrant": checkpointing == "reentrant"}
    args = _config(tmp_path, adversarial="fgm", contrastive_weight=0.5, **ckpt)

    seen: set[str] = set()

    class GradNames(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            seen.update(
                n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
            )

    trainer = _trainer(
        model, sentencepiece_tokenizer, records, args, peft_config=_lora(), callbacks=[GradNames()]
    )
    trainer.train()
    assert seen and all("lora_" in n for n in seen), sorted(seen)[:5]
    assert any("lora_A" in n for n in seen) and any("embed" not in n for n in seen)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert all(math.isfinite(h[k]) for k in ("loss", "lm_loss", "contrastive_loss", "adversarial_loss"))
        assert h["adversarial_loss"] > 0
        assert h["loss"] == pytest.approx(
            h["lm_loss"] + 0.5 * h["contrastive_loss"] + h["adversarial_loss"], rel=1e-4
        )
    base = trainer.model.get_base_model()
    after = {n: p for n, p in base.named_parameters() if "lora_" not in n}
    for name, p in after.items():
        key = name.replace(".base_layer", "")
        assert torch.equal(p.detach(), before[key]), f"{name} changed"
    emb = base.get_input_embeddings().weight
    assert torch.equal(emb.detach(), before["model.embed_tokens.weight"])


# ---- weight 0 == plain SFTTrainer -----------------------------------------------------------------------
def test_zero_weights_give_exactly_the_sft_loss(
    sentencepiece_tokenizer, tiny_model_factory, records, tmp_path
):
    from trl import SFTConfig, SFTTrainer

    common = dict(
        report_to="none",
        use_cpu=True,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        seed=7,
        bf16=False,
        disable_tqdm=True,
    )
    lora = _lora(lora_dropout=0.1)  # dropout consumes the RNG: both must consume it identically
    sft = SFTTrainer(
        tiny_model_factory("llama", sentencepiece_tokenizer),
        args=SFTConfig(output_dir=str(tmp_path / "sft"), **common),
        train_dataset=records_to_dataset(records),
        processing_class=sentencepiece_tokenizer,
        peft_config=lora,
    )
    sft.train()
    ours = CLLMFSTrainer(
        tiny_model_factory("llama", sentencepiece_tokenizer),
        args=CLLMFSConfig(
            output_dir=str(tmp_path / "ours"), contrastive_weight=0.0, adversarial_weight=0.0, **common
        ),
        train_dataset=records_to_dataset(records),
        processing_class=sentencepiece_tokenizer,
        peft_config=_lora(lora_dropout=0.1),
    )
    ours.train()
    sft_losses = [h["loss"] for h in sft.state.log_history if "loss" in h]
    our_logs = [h for h in ours.state.log_history if "loss" in h]
    assert len(sft_losses) == 3
    assert [h["loss"] for h in our_logs] == sft_losses
    assert [h["lm_loss"] for h in our_logs] == pytest.approx(sft_losses, rel=1e-6)
    sft_params = dict(sft.model.named_parameters())
    for name, p in ours.model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, sft_params[name]), name


# ---- gradient accumulation ------------------------------------------------------------------------------
def _one_sgd_step_delta(model_factory, tokenizer, records, tmp_path, tag, batch, accumulation, **terms):
    model = model_factory("llama", tokenizer, seed=3)
    args = _config(
        tmp_path / tag,
        max_steps=1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        in_batch_negatives=False,
        **terms,
    )
    trainer = _trainer(model, tokenizer, records, args, peft_config=_lora(init_lora_weights=False))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    return torch.cat(
        [(p.detach() - before[n]).flatten() for n, p in trainer.model.named_parameters() if n in before]
    )


def test_gradient_accumulation_matches_a_big_batch_for_each_term(
    sentencepiece_tokenizer, tiny_model_factory, records, tmp_path
):
    with_mentions = [r for r in records if r["spans"]]
    by_count = sorted(with_mentions, key=lambda r: len(r["spans"]))
    data = [by_count[0], by_count[-1], by_count[1], by_count[-2]]  # unequal mention counts per micro-batch
    assert len({len(r["spans"]) for r in data}) > 1
    settings = {
        "lm": dict(contrastive_weight=0.0, adversarial="none"),
        "contrastive": dict(contrastive_weight=1.0, adversarial="none"),
        "adversarial": dict(
            contrastive_weight=0.0, adversarial="fgm", adversarial_weight=1.0, adversarial_epsilon=0.5
        ),
    }
    deltas = {}
    for name, terms in settings.items():
        for batch, acc in ((4, 1), (2, 2)):
            deltas[name, acc] = _one_sgd_step_delta(
                tiny_model_factory,
                sentencepiece_tokenizer,
                data,
                tmp_path,
                f"{name}{acc}",
                batch,
                acc,
                **terms,
            )
    assert torch.allclose(deltas["lm", 1], deltas["lm", 2], rtol=1e-4, atol=1e-6)
    for term in ("contrastive", "adversarial"):
        big = deltas[term, 1] - deltas["lm", 1]
        small = deltas[term, 2] - deltas["lm", 2]
        assert big.norm() > 1e-4, f"the {term} term did not change the update"
        assert (big - small).norm() <= 1e-3 * big.norm(), f"{term}: accumulation changes the update"


# ---- the contrastive term does what it says -------------------------------------------------------------
def _probe(trainer, batch) -> tuple[float, float]:
    """(mean anchor-positive cosine - mean anchor-negative cosine, mean InfoNCE) at the contrastive layer."""
    model = trainer.model
    model.eval()
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
        terms = contrastive_loss_terms(
            out.hidden_states[trainer.contrastive_layer_index + 1],
            batch["cl_anchor_span"],
            batch["cl_positive_spans"],
            batch["cl_negative_spans"],
            batch["cl_row_label"],
            temperature=0.1,
            in_batch_negatives=True,
        )
    return terms.pos_cos - terms.neg_cos, terms.loss_sum.item() / terms.num_pairs


def test_contrastive_term_raises_anchor_positive_cosine(
    sentencepiece_tokenizer, tiny_model_factory, politics, tmp_path
):
    train = [r for r in build_records(politics[:40]) if r["spans"]]
    probe = CLLMFSDataCollator(sentencepiece_tokenizer)(train[:16])
    result = {}
    for weight in (0.0, 1.0):
        args = _config(
            tmp_path / str(weight),
            max_steps=30,
            per_device_train_batch_size=8,
            learning_rate=3e-3,
            contrastive_weight=weight,
            adversarial="none",
        )
        model = tiny_model_factory("llama", sentencepiece_tokenizer)
        trainer = _trainer(model, sentencepiece_tokenizer, train, args, peft_config=_lora(r=8, lora_alpha=16))
        start = _probe(trainer, probe)
        trainer.train()
        result[weight] = (start, _probe(trainer, probe))
    (margin_start, loss_start), (margin_end, loss_end) = result[1.0]
    (plain_start, _), (plain_margin, plain_loss) = result[0.0]
    assert plain_start == pytest.approx(margin_start, abs=1e-6)  # the same initial model
    assert margin_end > margin_start + 0.1, result
    assert margin_end > plain_margin + 0.1, result
    assert loss_end < loss_start and loss_end < plain_loss, result


def test_centred_prompt_end_term_with_warmup_and_relative_fgm(
    sentencepiece_tokenizer, tiny_model_factory, records, tmp_path
):
    """The study's levers on the trainer path: centring reaches the loss, the weight warms up linearly, the
    relative FGM step is a fraction of the embedding-output norm."""
    from transformers import TrainerCallback

    seen: list[float] = []

    class Weights(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            seen.append(trainer.contrastive_weight_now())

    first = {}
    for centering in ("none", "prompt_mean"):
        args = _config(
            tmp_path / centering,
            max_steps=4,
            contrastive_weight=0.5,
            contrastive_anchor="prompt_end",
            contrastive_centering=centering,
            contrastive_warmup_ratio=0.5,
            adversarial="fgm",
            adversarial_epsilon=0.05,
            adversarial_epsilon_scale="embedding_norm",
        )
        seen.clear()
        trainer = _trainer(
            tiny_model_factory("llama", sentencepiece_tokenizer),
            sentencepiece_tokenizer,
            records,
            args,
            peft_config=_lora(),
            callbacks=[Weights()],
        )
        assert trainer.data_collator.anchor == "prompt_end"
        trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
        assert all(math.isfinite(h[k]) for h in logs for k in ("contrastive_loss", "adversarial_loss"))
        first[centering] = logs[0]["contrastive_loss"]
        # warm-up over 0.5 x 4 = 2 steps: 1/2, then the full weight
        assert seen == pytest.approx([0.25, 0.5, 0.5, 0.5])
        assert logs[0]["loss"] == pytest.approx(
            logs[0]["lm_loss"] + 0.25 * logs[0]["contrastive_loss"] + logs[0]["adversarial_loss"], rel=1e-4
        )
    # the same initial model and batch: only the centring differs
    assert first["none"] != pytest.approx(first["prompt_mean"], rel=1e-3)


# ---- logging, empty batches, the same forward -----------------------------------------------------------
def test_batch_without_mentions_logs_exact_zero(
    sentencepiece_tokenizer, tiny_model_factory, politics, tmp_path
):
    negatives = [r for r in build_records(politics[:8], label_set(politics)) if not r["spans"]][:8]
    assert len(negatives) == 8
    args = _config(tmp_path, contrastive_weight=1.0, adversarial="fgm")
    trainer = _trainer(
        tiny_model_factory("qwen2", sentencepiece_tokenizer),
        sentencepiece_tokenizer,
        negatives,
        args,
        peft_config=_lora(),
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and all(h["contrastive_loss"] == 0.0 for h in logs)
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["adversarial_loss"]) for h in logs)


def test_contrastive_uses_the_chosen_layer_of_the_same_forward(
    sentencepiece_tokenizer, tiny_model_factory, records, tmp_path
):
    args = _config(
        tmp_path, contrastive_weight=1.0, adversarial="none", contrastive_layer=1, in_batch_negatives=True
    )
    trainer = _trainer(
        tiny_model_factory("llama", sentencepiece_tokenizer),
        sentencepiece_tokenizer,
        records,
        args,
        peft_config=_lora(),
    )
    assert trainer.contrastive_layer_index == 1
    batch = CLLMFSDataCollator(sentencepiece_tokenizer)([r for r in records if r["spans"]][:4])
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        hidden = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        ).hidden_states[2]
    ref = contrastive_loss_terms(
        hidden,
        batch["cl_anchor_span"],
        batch["cl_positive_spans"],
        batch["cl_negative_spans"],
        batch["cl_row_label"],
        0.1,
    )
    expected = ref.loss_sum.item() / ref.num_pairs
    assert trainer._metrics["eval"]["contrastive_loss"][-1] == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(trainer._metrics["eval"]["lm_loss"][-1] + expected, rel=1e-5)
    metrics = trainer.evaluate(records_to_dataset(records[:4]))
    assert {"eval_loss", "eval_lm_loss", "eval_contrastive_loss"} <= set(metrics)


# ---- architectures --------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["mistral", "gemma"])
def test_other_families_train(family, sentencepiece_tokenizer, tiny_model_factory, records, tmp_path):
    args = _config(
        tmp_path, max_steps=1, adversarial="fgm", contrastive_weight=1.0, activation_checkpointing=True
    )
    trainer = _trainer(
        tiny_model_factory(family, sentencepiece_tokenizer),
        sentencepiece_tokenizer,
        records,
        args,
        peft_config=_lora(),
    )
    trainer.train()
    (log,) = [h for h in trainer.state.log_history if "loss" in h]
    assert log["contrastive_loss"] > 0 and log["adversarial_loss"] > 0


def test_unhookable_model_and_bad_inputs(sentencepiece_tokenizer, tiny_model_factory, records, tmp_path):
    with pytest.raises(ValueError, match="decoder_layers_path"):
        find_decoder_layers(torch.nn.Linear(2, 2))
    model = tiny_model_factory("llama", sentencepiece_tokenizer)
    with pytest.raises(ValueError, match="does not lead"):
        _trainer(
            model, sentencepiece_tokenizer, records, _config(tmp_path, decoder_layers_path="model.blocks")
        )
    plain = [{"prompt": r["prompt"], "completion": r["completion"]} for r in records]
    import datasets

    with pytest.raises(ValueError, match="build_records"):
        CLLMFSTrainer(
            model,
            args=_config(tmp_path),
            train_dataset=datasets.Dataset.from_list(plain),
            processing_class=sentencepiece_tokenizer,
        )
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenized = datasets.Dataset.from_list(
        [dict(r, input_ids=[5, 6, 7], labels=[5, 6, 7]) for r in records[:4]]
    )
    no_spans = CLLMFSTrainer(
        model,
        args=_config(tmp_path, max_steps=1, adversarial="none"),
        train_dataset=tokenized,
        processing_class=sentencepiece_tokenizer,
        data_collator=DataCollatorForLanguageModeling(pad_token_id=sentencepiece_tokenizer.pad_token_id),
    )
    with pytest.raises(ValueError, match="CLLMFSDataCollator"):
        no_spans.train()
    from trl import SFTConfig

    with pytest.raises(TypeError, match="CLLMFSConfig"):
        CLLMFSTrainer(
            model,
            args=SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False),
            train_dataset=records_to_dataset(records),
        )


def test_left_padding_gives_the_right_padding_loss(
    sentencepiece_tokenizer, tiny_model_factory, records, tmp_path
):
    args = _config(tmp_path, contrastive_weight=1.0, adversarial="none")
    trainer = _trainer(
        tiny_model_factory("qwen2", sentencepiece_tokenizer),
        sentencepiece_tokenizer,
        records,
        args,
        peft_config=_lora(),
    )
    rows = [r for r in records if r["spans"]][:3] + [r for r in records if not r["spans"]][:1]
    trainer.model.train()
    results = {}
    for side in ("right", "left"):
        batch = CLLMFSDataCollator(sentencepiece_tokenizer, padding_side=side)(rows)
        assert batch["attention_mask"].sum(1).unique().numel() > 1  # padding happens
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=None)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
        assert torch.isfinite(grads).all()
        results[side] = (loss.item(), trainer._metrics["train"]["contrastive_loss"][-1], grads)
    assert results["left"][0] == pytest.approx(results["right"][0], rel=1e-4)
    assert results["left"][1] == pytest.approx(results["right"][1], rel=1e-4)
    assert torch.allclose(results["left"][2], results["right"][2], rtol=1e-3, atol=1e-6)


# ---- FGM: one backward per micro-batch gives the gradients of the two-backward path ---------------------
def _grads_of_first_step(model_factory, tokenizer, records, tmp_path, tag, **overrides):
    """The parameter gradients the optimizer sees at step 1 (after accumulation), by name."""
    from transformers import TrainerCallback

    grads: dict[str, torch.Tensor] = {}

    class Grab(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if not grads:
                grads.update(
                    {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
                )

    settings = {
        "max_steps": 1,
        "contrastive_weight": 1.0,
        "adversarial": "fgm",
        "adversarial_weight": 1.0,
        "adversarial_epsilon": 0.5,
        "max_grad_norm": 0.0,  # the raw gradients, not clipped ones
        **overrides,
    }
    trainer = _trainer(
        model_factory("llama", tokenizer, seed=3),
        tokenizer,
        records,
        _config(tmp_path / tag, **settings),
        peft_config=_lora(init_lora_weights=False),
        callbacks=[Grab()],
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    return trainer, grads, logs[0]


@pytest.mark.parametrize(
    "batch,accumulation,extra",
    [
        (4, 1, {}),
        (2, 2, {}),
        (2, 2, dict(adversarial_epsilon=0.05, adversarial_epsilon_scale="embedding_norm")),
        (2, 2, dict(activation_checkpointing=True)),  # non-reentrant, transformers' default
        (2, 2, dict(adversarial_contrastive=True)),
    ],
    ids=["no-accumulation", "accumulation", "relative-epsilon", "checkpointing", "adversarial-contrastive"],
)
def test_single_backward_fgm_gives_the_two_backward_gradients(
    batch, accumulation, extra, sentencepiece_tokenizer, tiny_model_factory, records, tmp_path
):
    """The acceptance test of the one-backward FGM path: same gradients (1e-5, float32), same logged terms."""
    data = [r for r in records if r["spans"]][:4]
    runs = {}
    for mode in ("double", "single"):
        runs[mode] = _grads_of_first_step(
            tiny_model_factory,
            sentencepiece_tokenizer,
            data,
            tmp_path,
            mode,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            adversarial_backward=mode,
            **extra,
        )
    (t_double, g_double, log_double), (t_single, g_single, log_single) = runs["double"], runs["single"]
    assert (t_double.fgm_backward, t_single.fgm_backward) == ("double", "single")
    assert g_double and sorted(g_double) == sorted(g_single)
    assert all("lora_" in n for n in g_single)
    assert sum(float(g.abs().sum()) for g in g_single.values()) > 0
    for name, g in g_double.items():
        assert torch.allclose(g_single[name], g, rtol=1e-5, atol=1e-5), (
            name,
            float((g_single[name] - g).abs().max()),
        )
    for key in ("loss", "lm_loss", "contrastive_loss", "adversarial_loss"):
        assert log_single[key] == pytest.approx(log_double[key], rel=1e-5, abs=1e-6), key
    assert log_single["loss"] == pytest.approx(
        log_single["lm_loss"] + log_single["contrastive_loss"] + log_single["adversarial_loss"], rel=1e-4
    )


@pytest.mark.parametrize("backward", ["double", "single"])
def test_adversarial_contrastive_adds_the_perturbed_forwards_infonce(
    backward, sentencepiece_tokenizer, tiny_model_factory, records, tmp_path
):
    """With adversarial_contrastive the adversarial loss is its LM loss plus w_cl x the InfoNCE of the perturbed
    states: the same first step without it gives the LM part (the perturbation comes from the clean loss alone)."""
    data = [r for r in records if r["spans"]][:4]
    from cllmfs_hf.training import loss_terms

    logs, summaries = {}, {}
    for on in (False, True):
        trainer, _, logs[on] = _grads_of_first_step(
            tiny_model_factory,
            sentencepiece_tokenizer,
            data,
            tmp_path,
            f"{backward}-{on}",
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            adversarial_backward=backward,
            contrastive_weight=0.5,
            contrastive_warmup_ratio=0.0,
            adversarial_contrastive=on,
        )
        summaries[on] = loss_terms(trainer.state.log_history)
    off, on = logs[False], logs[True]
    assert "adversarial_contrastive_loss" not in off
    # run summaries (the benchmark's loss_terms) keep the term
    assert (
        "adversarial_contrastive_loss" in summaries[True]
        and "adversarial_contrastive_loss" not in summaries[False]
    )
    assert math.isfinite(on["adversarial_contrastive_loss"]) and on["adversarial_contrastive_loss"] > 0
    # the perturbation reaches the states: the perturbed InfoNCE is not the clean one
    assert on["adversarial_contrastive_loss"] != pytest.approx(on["contrastive_loss"], rel=1e-4)
    for key in ("lm_loss", "contrastive_loss"):
        assert on[key] == pytest.approx(off[key], rel=1e-5), key
    assert on["adversarial_loss"] == pytest.approx(
        off["adversarial_loss"] + 0.5 * on["adversarial_contrastive_loss"], rel=1e-5
    )
    assert on["loss"] == pytest.approx(
        on["lm_loss"] + 0.5 * on["contrastive_loss"] + on["adversarial_loss"], rel=1e-4
    )


def test_fgm_backward_choice_and_checkpointing(
    sentencepiece_tokenizer, tiny_model_factory, records, tmp_path
):
    from cllmfs_hf.fgm import checkpointing_is_reentrant, use_non_reentrant_checkpointing

    def build(**kw):
        return _trainer(
            tiny_model_factory("llama", sentencepiece_tokenizer),
            sentencepiece_tokenizer,
            records[:4],
            _config(tmp_path, max_steps=1, **kw),
            peft_config=_lora(),
        )

    assert build().fgm_backward == "double"  # auto, one process: the path with one backward pass fewer
    assert build(adversarial="none").fgm_backward is None
    with pytest.raises(ValueError, match=r"use_reentrant': False"):
        build(
            adversarial_backward="single",
            activation_checkpointing=True,
            activation_checkpointing_kwargs={"use_reentrant": True},
        )
    with pytest.raises(ValueError, match="adversarial_backward="):
        CLLMFSConfig(output_dir=str(tmp_path), adversarial_backward="triple")
    # Reentrant checkpointing chosen by someone else (TRL does so for PEFT + ZeRO-3): the first step of the
    # single path re-binds it to non-reentrant, and trains.
    trainer = build(adversarial_backward="single", activation_checkpointing=True)
    trainer.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    assert checkpointing_is_reentrant(trainer.model)
    original = trainer.model.activation_checkpointing_enable
    trainer.model.activation_checkpointing_enable = lambda **kw: original(
        activation_checkpointing_kwargs={"use_reentrant": True}
    )
    trainer.train()
    assert not checkpointing_is_reentrant(trainer.model)
    assert not use_non_reentrant_checkpointing(trainer.model)
    log = [h for h in trainer.state.log_history if "loss" in h][0]
    assert math.isfinite(log["adversarial_loss"]) and log["adversarial_loss"] > 0


def test_fgm_runs_under_accelerate_deepspeed_with_one_backward(
    tmp_path, smollm2_tokenizer, tiny_model_factory, records, monkeypatch
):
    """`accelerate launch --config_file deepspeed_zero2.yaml` sets no --deepspeed, only the plugin: FGM takes the
    one-backward path, and the two-backward path is refused before training with the fix."""
    pytest.importorskip("deepspeed")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    args = _config(tmp_path, use_cpu=False)
    assert args.deepspeed is None and args.deepspeed_plugin is not None
    model = tiny_model_factory("llama", smollm2_tokenizer)
    assert _trainer(model, smollm2_tokenizer, records[:4], args, peft_config=_lora()).fgm_backward == "single"
    args = _config(tmp_path, use_cpu=False, adversarial_backward="double")
    model = tiny_model_factory("llama", smollm2_tokenizer)
    with pytest.raises(
        ValueError,
        match=r"does not run under DeepSpeed \(the accelerate config.s distributed_type: DEEPSPEED \(ZeRO stage 2\).*adversarial_backward single",
    ):
        _trainer(model, smollm2_tokenizer, records[:4], args, peft_config=_lora())
