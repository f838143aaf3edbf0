def test_tokenizers_and_tiny_models(smollm2_tokenizer, sentencepiece_tokenizer, tiny_model_factory):
    import torch

    for tok in (smollm2_tokenizer, sentencepiece_tokenizer):
        ids = tok.apply_chat_template(
            [{"role": "user", "content": "Ada met Bob"}], add_generation_prompt=True
        )
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        for family in ("llama", "qwen2"):
            model = tiny_model_factory(family, tok)
            out = model(torch.tensor([list(ids)]))
            assert out.logits.shape[-1] == len(tok)
