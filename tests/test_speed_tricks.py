"""Every speed trick gives the same result as the plain path (to within bf16 rounding for bf16)."""

import torch
from helpers import chat

from tuneforge.data.formats import parse_record
from tuneforge.data.tokenize import ChatTokenizer
from tuneforge.train.loop import collate, epoch_order, weighted_token_loss


def tiny_batch(smol_tokenizer, prompt_loss_weight=0.0):
    records = [chat(f"Question {i}: " + "word " * (3 * i), f"Answer number {i}") for i in range(6)]
    examples = [parse_record(r, 1)[1].example for r in records]
    encoded = ChatTokenizer(smol_tokenizer, prompt_loss_weight).encode(examples)
    return collate(encoded, smol_tokenizer.pad_token_id)


def load(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def test_sparse_output_layer_gives_the_dense_loss_and_gradients(tiny_model_dir, smol_tokenizer):
    model = load(tiny_model_dir)
    for prompt_loss_weight in (0.0, 0.1):
        batch = tiny_batch(smol_tokenizer, prompt_loss_weight)
        results = []
        for sparse in (False, True):
            model.zero_grad()
            loss, correct, counted = weighted_token_loss(model, batch, sparse_head=sparse)
            loss.backward()
            results.append((loss.item(), correct, counted, model.lm_head.weight.grad.clone()))
        (dense_loss, dense_right, dense_n, dense_grad), (sparse_loss, sparse_right, sparse_n, sparse_grad) = results
        assert abs(dense_loss - sparse_loss) < 1e-5 * abs(dense_loss)
        assert (dense_right, dense_n) == (sparse_right, sparse_n)
        assert torch.allclose(dense_grad, sparse_grad, atol=1e-7)


def test_bf16_autocast_loss_matches_fp32_within_rounding(tiny_model_dir, smol_tokenizer):
    model = load(tiny_model_dir)
    batch = tiny_batch(smol_tokenizer)
    with torch.no_grad():
        fp32, _, _ = weighted_token_loss(model, batch)
        bf16, _, _ = weighted_token_loss(model, batch, dtype=torch.bfloat16)
    assert abs(fp32.item() - bf16.item()) < 0.01 * fp32.item()
    assert model.lm_head.weight.dtype == torch.float32  # master weights stay fp32


def test_length_grouped_batches_cover_each_example_once_with_less_padding():
    lengths = [(i * 37) % 200 + 10 for i in range(1000)]
    plain = epoch_order(1000, 8, seed=1, epoch=0)
    grouped = epoch_order(1000, 8, seed=1, epoch=0, lengths=lengths)
    assert sorted(i for batch in grouped for i in batch) == list(range(1000))

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(grouped) < 0.1 * padding(plain)
    assert grouped == epoch_order(1000, 8, seed=1, epoch=0, lengths=lengths)  # deterministic
    assert grouped != epoch_order(1000, 8, seed=1, epoch=1, lengths=lengths)  # reshuffled each epoch
