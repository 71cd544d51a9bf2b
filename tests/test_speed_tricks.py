"""Every speed trick gives the same result as the plain path (to within bf16 rounding for bf16)."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import chat, loss_and_grads, recipe_lora_model

from tuneforge.data.formats import parse_record
from tuneforge.data.tokenize import ChatTokenizer
from tuneforge.train.loop import batches_per_epoch, collate, epoch_order, weighted_token_loss


def numbered_chats(indices) -> list[dict]:
    """Chats whose question grows with i % 6 (0 to 15 filler words): what `learned_model_dir` learned."""
    return [chat(f"Question {i}: " + "word " * (3 * (i % 6)), f"Answer number {i}") for i in indices]


def tiny_batch(smol_tokenizer, prompt_loss_weight=0.0):
    examples = [parse_record(r, 1)[1].example for r in numbered_chats(range(6))]
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


@pytest.mark.parametrize("lengths", [None, [(i * 37) % 200 + 10 for i in range(1030)]], ids=["plain", "grouped"])
def test_task_and_replay_examples_never_share_a_batch_and_are_each_seen_once(lengths):
    sources = [1000, 30]  # the task's examples, then the replay's
    batches = epoch_order(1030, 8, seed=1, epoch=0, lengths=lengths, sources=sources)
    assert sorted(i for batch in batches for i in batch) == list(range(1030))
    assert all(max(batch) < 1000 or min(batch) >= 1000 for batch in batches)
    assert len(batches) == batches_per_epoch(sources, 8) == 125 + 4
    replay_at = [n for n, batch in enumerate(batches) if batch[0] >= 1000]
    assert replay_at[-1] - replay_at[0] > len(batches) // 2  # shuffled among the task's, not bunched at the end
    assert batches == epoch_order(1030, 8, seed=1, epoch=0, lengths=lengths, sources=sources)
    assert epoch_order(1030, 8, seed=1, epoch=0, lengths=lengths, sources=[1030]) == epoch_order(
        1030, 8, seed=1, epoch=0, lengths=lengths
    )  # one source: the order of old
    with pytest.raises(ValueError, match="do not add up"):
        epoch_order(1030, 8, seed=1, epoch=0, sources=[1000, 20])


def lora_model(tiny_model_dir, targets="all-linear"):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(
        load(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False),
    )  # non-zero B: real gradients everywhere
    return model.train()


def gradient_gaps(reference, other) -> tuple[float, float]:
    """(the gradients' relative L2 distance, all tensors together; each entry's largest difference
    relative to the reference's largest entry anywhere). Not per tensor: on `learned_model_dir` layer
    1's q and k adapters get gradients ~1e4 times smaller than the rest, and their bf16 rounding
    noise reaches half of their own size while changing nothing a step does."""
    assert reference[3].keys() == other[3].keys() and reference[3]
    a = torch.cat([grad.flatten() for grad in reference[3].values()])
    b = torch.cat([other[3][name].flatten() for name in reference[3]])
    return float((b - a).norm() / a.norm()), float((b - a).abs().max() / a.abs().max())


def test_bf16_autocast_gives_the_fp32_logits_loss_and_lora_gradients(learned_model_dir, smol_tokenizer):
    batch = tiny_batch(smol_tokenizer, prompt_loss_weight=0.1)
    model = lora_model(learned_model_dir)  # fp32 weights, adapters with non-zero B
    logits = []  # the output layer's output, what the loss is taken of: (trained tokens, vocab)
    model.get_base_model().lm_head.register_forward_hook(lambda module, args, output: logits.append(output.detach()))
    fp32 = loss_and_grads(model, batch)
    bf16 = loss_and_grads(model, batch, dtype=torch.bfloat16)
    (fp32_logits, bf16_logits) = logits
    assert fp32_logits.dtype == torch.float32 and bf16_logits.dtype == torch.bfloat16  # autocast really ran
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert fp32[0] / batch.trained_tokens < 0.6 * math.log(model.config.vocab_size)  # learned: far from uniform
    # Measured on four trained seeds (2026-12-01): loss within 2.5e-4, logits within 5.7e-3 of the
    # largest logit, gradients 6.1e-3 apart (L2) and 7.3e-3 (largest entry); the bounds leave ~3x.
    assert abs(bf16[0] - fp32[0]) <= 1e-3 * fp32[0], (fp32[0], bf16[0])
    assert bf16[2] == fp32[2]
    logit_gap = (bf16_logits.float() - fp32_logits).abs().max() / fp32_logits.abs().max()
    assert logit_gap <= 2e-2, logit_gap
    assert all(".lora_" in name for name in fp32[3])
    l2_gap, entry_gap = gradient_gaps(fp32, bf16)
    assert l2_gap <= 2e-2 and entry_gap <= 2.5e-2, (l2_gap, entry_gap)


def test_frozen_weights_bf16_train_like_fp32_frozen_weights_under_autocast(learned_model_dir, smol_tokenizer):
    """frozen_weights_bf16 stores the base in bf16 instead of letting autocast round it on every
    matmul: from the same adapters, three AdamW steps on the same batch give the same losses, and
    the first step the same LoRA gradients, to within what bf16 storage adds."""
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.loop import build_optimizer
    from tuneforge.train.sft import build_model

    batch = tiny_batch(smol_tokenizer, prompt_loss_weight=0.1)

    def built(frozen_weights_bf16: bool):
        # (data is not read: build_model only loads the model and adds the adapters)
        config = TrainConfig(
            model=str(learned_model_dir),
            data=learned_model_dir,
            precision="bf16",
            lora_rank=4,
            lora_alpha=8,
            frozen_weights_bf16=frozen_weights_bf16,
        ).resolve(6, 512)
        return build_model(config)

    stored, frozen = built(False), built(True)
    torch.manual_seed(5)
    with torch.no_grad():
        adapters = {name: p for name, p in stored.named_parameters() if p.requires_grad}
        for name, p in adapters.items():
            if ".lora_B." in name:
                p.normal_(std=0.02)  # non-zero B: lora_A gets gradients too
        for name, p in frozen.named_parameters():
            if p.requires_grad:
                p.copy_(adapters[name])
    assert {p.dtype for p in stored.parameters()} == {torch.float32}
    assert {p.dtype for p in frozen.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for p in frozen.parameters() if p.requires_grad} == {torch.float32}  # the adapters' masters

    results = {}
    for label, model in (("stored", stored), ("frozen", frozen)):
        optimizer = build_optimizer(model, learning_rate=1e-2, weight_decay=0.0)
        results[label] = []
        for _ in range(3):
            results[label].append(loss_and_grads(model, batch, dtype=torch.bfloat16))
            optimizer.step()
    losses = {label: [r[0] / batch.trained_tokens for r in steps] for label, steps in results.items()}
    assert losses["stored"][0] < 0.6 * math.log(stored.config.vocab_size) and losses["stored"][2] < losses["stored"][0]
    # Measured on four trained seeds (2026-12-01): the three losses within 7e-4 and the gradients 1.3e-2
    # apart (L2 and largest entry), about twice autocast's own gap to fp32: bf16 storage also rounds
    # the embeddings, norms and residual stream, which autocast leaves in fp32. The bounds leave ~3x.
    relative = [(f - s) / s for f, s in zip(losses["frozen"], losses["stored"])]
    assert max(map(abs, relative)) <= 2e-3, relative
    l2_gap, entry_gap = gradient_gaps(results["stored"][0], results["frozen"][0])
    assert l2_gap <= 4e-2 and entry_gap <= 4e-2, (l2_gap, entry_gap)


def assert_same(reference, other, rtol):
    (loss_a, right_a, n_a, grads_a), (loss_b, right_b, n_b, grads_b) = reference, other
    assert abs(loss_a - loss_b) <= rtol * abs(loss_a), (loss_a, loss_b)
    assert (right_a, n_a) == (right_b, n_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        scale = grads_a[name].abs().max()
        assert (grads_a[name] - grads_b[name]).abs().max() <= rtol * scale + 1e-9, name


def test_padding_free_batch_gives_the_padded_loss_and_gradients(tiny_model_dir, smol_tokenizer):
    from tuneforge.train.loop import collate_padding_free
    from tuneforge.train.padding_free import use_varlen_attention

    model = lora_model(tiny_model_dir)
    padded = tiny_batch(smol_tokenizer, prompt_loss_weight=0.1)
    examples = [padded_example(padded, row) for row in range(padded.input_ids.shape[0])]
    free = collate_padding_free(examples)
    assert free.input_ids.shape == (1, padded.tokens) and free.tokens == padded.tokens
    assert free.trained_tokens == pytest.approx(padded.trained_tokens)
    reference = loss_and_grads(model, padded)
    use_varlen_attention(model)
    assert_same(reference, loss_and_grads(model, free), rtol=2e-5)
    assert_same(reference, loss_and_grads(model, padded), rtol=2e-5)  # padded batches still take transformers' path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_varlen_attention_is_causal_attention_within_each_example(dtype):
    from tuneforge.train.padding_free import varlen_sdpa_attention

    torch.manual_seed(0)
    lengths = [5, 9, 1, 7]
    starts = torch.tensor([0, 5, 14, 15, 22])
    query, key, value = (torch.randn(1, heads, sum(lengths), 16) for heads in (6, 2, 2))  # grouped-query heads
    output_grad = torch.randn(1, sum(lengths), 6, 16)

    def attention(function, dtype):
        inputs = [t.detach().to(dtype).requires_grad_() for t in (query, key, value)]
        output = function(inputs)
        output.backward(output_grad.to(dtype))
        return [output.float()] + [t.grad.float() for t in inputs]

    def per_example(inputs):  # plain SDPA on each example alone
        q, k, v = inputs
        return torch.cat(
            [
                F.scaled_dot_product_attention(*(t[:, :, a:b] for t in (q, k, v)), is_causal=True, enable_gqa=True)
                for a, b in zip(starts[:-1], starts[1:])
            ],
            dim=2,
        ).transpose(1, 2)

    module = torch.nn.Module().eval()
    varlen = attention(
        lambda inputs: varlen_sdpa_attention(module, *inputs, None, scaling=0.25, cu_seq_lens_q=starts)[0], dtype
    )
    exact = attention(per_example, torch.float32)
    if dtype == torch.float32:
        for ours, reference in zip(varlen, exact):
            assert torch.allclose(ours, reference, atol=1e-5)
        return
    plain_bf16 = attention(per_example, torch.bfloat16)  # what SDPA's own bf16 path gives
    for ours, plain, reference in zip(varlen, plain_bf16, exact):  # output, then each input's gradient
        assert (ours - reference).abs().mean() <= 1.1 * (plain - reference).abs().mean()


def padded_example(batch, row):
    from tuneforge.data.tokenize import TokenizedExample

    length = int(batch.attention_mask[row].sum())
    return TokenizedExample(batch.input_ids[row, :length].tolist(), batch.loss_weights[row, :length].numpy(), length)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_chunked_loss_gives_the_plain_loss_gradients_and_accuracy(tiny_model_dir, smol_tokenizer, monkeypatch, dtype):
    from tuneforge.train import chunked_loss

    monkeypatch.setattr(chunked_loss, "CHUNK_TOKENS", 7)  # several chunks and a ragged last one
    batch = tiny_batch(smol_tokenizer, prompt_loss_weight=0.1)
    model = load(tiny_model_dir).train()  # full fine-tuning: the output layer's weight gets a gradient too
    reference = loss_and_grads(model, batch, dtype=dtype)
    chunked = loss_and_grads(model, batch, dtype=dtype, chunked=True)
    assert_same(reference, chunked, rtol=1e-5 if dtype is None else 2e-2)


def test_token_accuracy_counts_the_targets_argmax_picks_and_ties_for_the_top():
    from tuneforge.train.loop import predicted_correctly

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1000, generator=generator)
    targets = torch.randint(0, 1000, (64,), generator=generator)
    targets[:20] = logits[:20].argmax(-1)  # some right, the rest mostly wrong
    assert predicted_correctly(logits, targets) == int((logits.argmax(-1) == targets).sum()) >= 20
    logits[0, targets[0] + 1 if targets[0] < 999 else 0] = logits[0, targets[0]]  # a tie for the top
    logits[1, targets[1]] -= 1e-3  # just below another token's score
    logits[1, (targets[1] + 1) % 1000] = logits[1, targets[1]] + 1e-3
    assert predicted_correctly(logits, targets) == int((logits.argmax(-1) == targets).sum()) + int(
        logits[0].argmax() != targets[0]
    )


def test_chunked_loss_leaves_an_adapted_output_layer_to_the_plain_path(tiny_model_dir, smol_tokenizer):
    batch = tiny_batch(smol_tokenizer)
    model = lora_model(tiny_model_dir, targets=["q_proj", "lm_head"])
    reference = loss_and_grads(model, batch)
    chunked = loss_and_grads(model, batch, chunked=True)
    assert_same(reference, chunked, rtol=1e-5)
    assert any("lm_head.lora_A" in name for name in chunked[3])


def test_fused_lora_dropout_is_dropout_then_projection_with_a_replayable_mask(tiny_model_dir):
    from tuneforge.train.lora_dropout import DroppedLinear, dropout_keep_mask, fuse_lora_dropout

    keep = dropout_keep_mask(torch.Size([1000, 1000]), 0.1, seed=5)
    assert abs(keep.float().mean().item() - 0.9) < 0.002
    assert torch.equal(keep, dropout_keep_mask(torch.Size([1000, 1000]), 0.1, seed=5))

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load(tiny_model_dir), LoraConfig(r=4, lora_dropout=0.25, target_modules="all-linear"))
    names = sorted(name for name, _ in model.named_parameters())
    assert fuse_lora_dropout(model) == 14  # 7 linear layers x 2 blocks
    assert sorted(name for name, _ in model.named_parameters()) == names  # checkpoints load unchanged
    projection = next(m for m in model.modules() if isinstance(m, DroppedLinear))
    x = torch.randn(3, 5, projection.in_features, requires_grad=True)
    projection.train()
    torch.manual_seed(11)
    out = projection(x)
    out.square().sum().backward()
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**62, (1,)))  # the draw the layer made
    mask = dropout_keep_mask(x.shape, 0.25, seed)
    x_ref = x.detach().clone().requires_grad_(True)
    weight = projection.weight.detach().clone().requires_grad_(True)
    expected = (x_ref * mask / 0.75) @ weight.T
    expected.square().sum().backward()
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    assert torch.allclose(projection.weight.grad, weight.grad, atol=1e-5)
    projection.eval()
    assert torch.equal(projection(x), torch.nn.functional.linear(x, projection.weight))


def saved_bytes(model, batch, **options) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in one forward pass."""
    storages = {}

    def keep(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        weighted_token_loss(model, batch, **options)
    return sum(storages.values())


@pytest.mark.parametrize("setup", ["lora fp32", "full fp32", "lora bf16 base, autocast"])
def test_lean_activations_give_the_plain_loss_and_gradients_and_keep_less(tiny_model_dir, smol_tokenizer, setup):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.train.lean_activations import use_lean_activations

    batch = tiny_batch(smol_tokenizer, prompt_loss_weight=0.1)
    dtype = torch.bfloat16 if "bf16" in setup else None
    if setup.startswith("full"):
        model = load(tiny_model_dir).train()  # the norms' weights train too
    else:
        torch.manual_seed(1)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype or torch.float32)
        model = get_peft_model(
            base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        ).train()
    config = model.config
    reference, plain_saved = loss_and_grads(model, batch, dtype=dtype), saved_bytes(model, batch, dtype=dtype)
    assert (
        use_lean_activations(model) == 3 * config.num_hidden_layers + 1
    )  # two norms and an MLP per layer, the final norm
    lean, lean_saved = loss_and_grads(model, batch, dtype=dtype), saved_bytes(model, batch, dtype=dtype)
    assert_same(reference, lean, rtol=1e-5 if dtype is None else 2e-2)
    # At least silu(gate), one (tokens x intermediate) tensor per layer, is no longer kept.
    itemsize = 2 if dtype else 4
    assert (
        plain_saved - lean_saved
        >= config.num_hidden_layers * batch.input_ids.numel() * config.intermediate_size * itemsize
    )


def test_lean_activations_leave_other_norms_alone():
    from tuneforge.train.lean_activations import use_lean_activations

    class ScaledNorm(torch.nn.Module):  # a norm with Llama's attribute names but its own formula
        variance_epsilon, weight = 1e-6, torch.nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * (1 + self.weight)

    model = torch.nn.Sequential(ScaledNorm())
    assert use_lean_activations(model) == 0
    assert torch.equal(model(torch.ones(2, 4)), torch.full((2, 4), 2.0))


def grad_errors(reference, other) -> dict:
    """Each gradient's largest difference from the reference, relative to the reference's largest entry."""
    return {name: float((other[3][name] - grad).abs().max() / grad.abs().max()) for name, grad in reference[3].items()}


@pytest.mark.parametrize("setup", ["fp32", "bf16 base, autocast", "fp32 base, autocast"])
def test_fused_lora_gives_peft_loss_and_gradients(tiny_model_dir, smol_tokenizer, setup):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.train.fused_lora import FusedLoraLinear, fuse_lora_layers

    def model_for(base_dtype):
        torch.manual_seed(1)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=base_dtype)
        return get_peft_model(
            base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
        ).train()

    batch = tiny_batch(smol_tokenizer, prompt_loss_weight=0.1)
    exact = loss_and_grads(model_for(torch.float32), batch)  # peft in fp32: the reference for both
    dtype = None if setup == "fp32" else torch.bfloat16
    model = model_for(torch.bfloat16 if "bf16 base" in setup else torch.float32)
    peft_result = loss_and_grads(model, batch, dtype=dtype)
    assert fuse_lora_layers(model) == 7 * model.config.num_hidden_layers
    calls = []
    for module in model.modules():
        if isinstance(module, FusedLoraLinear):
            module.register_forward_hook(lambda m, args, out: calls.append(m._plain_adapter()))
    fused = loss_and_grads(model, batch, dtype=dtype)
    assert calls and all(adapter == "default" for adapter in calls)  # every layer took the fused path
    assert any(".lora_B." in name for name in fused[3]) and any(".lora_A." in name for name in fused[3])
    if dtype is None:
        assert_same(peft_result, fused, rtol=1e-5)
        return
    # bf16: the two paths round in different places (gradients differ by up to ~5 % of their largest
    # entry on this tiny model), so compare each with fp32: the fused path must be no worse than peft.
    assert abs(fused[0] - exact[0]) <= 2 * abs(peft_result[0] - exact[0]) + 1e-3 * abs(exact[0])
    peft_errors, fused_errors = grad_errors(exact, peft_result), grad_errors(exact, fused)
    assert max(fused_errors.values()) <= 1.5 * max(peft_errors.values())
    assert sum(fused_errors.values()) <= 1.2 * sum(peft_errors.values())


@pytest.mark.parametrize("used", ["all", "q and v only"])
def test_sibling_lora_layers_run_as_one_and_give_each_layers_output_and_gradients(tiny_model_dir, used):
    from peft import LoraConfig, get_peft_model

    from tuneforge.train.fused_lora import fuse_lora_layers

    torch.manual_seed(1)
    model = get_peft_model(
        load(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    fuse_lora_layers(model)
    attention = model.base_model.model.model.layers[0].self_attn
    members = [attention.q_proj, attention.k_proj, attention.v_proj]
    group = attention.q_proj.siblings
    assert group is not None and all(m.siblings is group for m in members)
    x = torch.randn(2, 5, attention.q_proj.in_features)
    upstream = [torch.randn(2, 5, m.out_features) for m in members]
    kept = [0, 1, 2] if used == "all" else [0, 2]

    def outputs_and_grads():
        model.zero_grad()
        leaf = x.clone().requires_grad_()
        outputs = [m(leaf) for m in members]
        torch.autograd.backward([outputs[i] for i in kept], [upstream[i] for i in kept])
        grads = {n: p.grad.clone() for n, p in attention.named_parameters() if p.grad is not None}
        return outputs, leaf.grad, grads

    together, x_grad, grads = outputs_and_grads()
    assert {type(o.grad_fn).__name__ for o in together} == {"_LoraSiblingsFunctionBackward"}
    for member in members:
        member.siblings = None
    alone, x_grad_alone, grads_alone = outputs_and_grads()
    assert {type(o.grad_fn).__name__ for o in alone} == {"_LoraLinearFunctionBackward"}
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_grad, x_grad_alone, rtol=1e-5, atol=1e-6)
    # an unused output's adapter gets no gradient through its B, and its A a zero one
    assert {n for n, g in grads.items() if g.abs().sum() > 0} == set(grads_alone)
    for name, grad in grads_alone.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7)

    for member in members:
        member.siblings = group
    other = torch.randn_like(x)
    assert type(attention.k_proj(other).grad_fn).__name__ == "_LoraLinearFunctionBackward"  # before q: alone
    attention.q_proj(x)
    assert type(attention.k_proj(other).grad_fn).__name__ == "_LoraLinearFunctionBackward"  # another input: alone
    assert type(attention.k_proj(x).grad_fn).__name__ == "_LoraSiblingsFunctionBackward"  # q's input: its share


def test_fused_lora_leaves_dropout_disabled_and_merged_adapters_to_peft(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from tuneforge.train.fused_lora import fuse_lora_layers

    torch.manual_seed(1)
    model = get_peft_model(
        load(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.5, target_modules=["q_proj"], init_lora_weights=False),
    )
    fuse_lora_layers(model)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer._plain_adapter() is None  # dropout on the adapter's input: peft's path
    layer.lora_dropout["default"] = torch.nn.Identity()
    assert layer._plain_adapter() == "default"
    x = torch.randn(2, 3, layer.in_features)
    with torch.no_grad():
        fused = layer(x)
        with model.disable_adapter():
            assert layer._plain_adapter() is None
            assert torch.allclose(layer(x), layer.base_layer(x))
        layer.merge()
        assert layer._plain_adapter() is None
        assert torch.allclose(layer(x), fused, atol=1e-5)  # the merged weight computes what the fused path did
        layer.unmerge()
        assert not torch.allclose(fused, layer.base_layer(x), atol=1e-3)  # the adapter did something


TRICKS = (
    "padding_free",
    "shared_prefix",
    "chunked_loss",
    "fast_lora_dropout",
    "sparse_output_layer",
    "lean_activations",
    "fused_lora",
)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_all_speed_tricks_train_like_the_plain_path(tmp_path, learned_model_dir, precision):
    """End to end: the recipe with every trick on and with every trick off (no dropout, so the two
    runs see the same randomness) gives the same training losses and the same validation losses, on
    a model whose loss starts far from ln V. In bf16, "on" stores the frozen weights in bf16 too."""
    import csv
    import json

    from helpers import write_jsonl

    from tuneforge.runs.training import train_run
    from tuneforge.train.config import TrainConfig

    data = write_jsonl(tmp_path / "train.jsonl", numbered_chats(range(24)))
    validation = write_jsonl(tmp_path / "validation.jsonl", numbered_chats(range(24, 32)))
    traces = []
    for on in (False, True):
        result = train_run(
            TrainConfig(
                model=str(learned_model_dir),
                data=data,
                validation_data=validation,
                n_epochs=2,
                batch_size=4,
                lora_dropout=0.0,
                seed=3,
                precision=precision,
                learning_rate_multiplier=5,
                group_by_length=False,
                frozen_weights_bf16=on and precision == "bf16",
                **{trick: on for trick in TRICKS},
            )
        )
        with (result.run_dir / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        traces.append(
            (
                [float(r["train_loss"]) for r in rows if r["train_loss"]],
                [float(r["valid_loss"]) for r in rows if r["valid_loss"]],
            )
        )
    (plain_train, plain_valid), (tricks_train, tricks_valid) = traces
    assert len(plain_train) == len(tricks_train) == 12  # 2 epochs of 6 steps
    assert len(plain_valid) == len(tricks_valid) == 5  # the base model, then twice an epoch (auto)
    vocab = json.loads((learned_model_dir / "config.json").read_text())["vocab_size"]
    assert plain_valid[0] < 0.6 * math.log(vocab) and plain_valid[-1] < plain_valid[0]  # far from ln V, and learning
    if precision == "fp32":
        assert tricks_train == pytest.approx(plain_train, rel=1e-4)
        assert tricks_valid == pytest.approx(plain_valid, rel=1e-4)
        return
    # bf16, measured with run seeds 3, 4 and 5 (2026-12-01): steps within 2.8e-3, validation losses within
    # 1.9e-3, the mean signed step difference (drift) within 1.2e-3, nearly all of it frozen_weights_bf16's
    # (with only it on: steps 1.9e-3, validation 9.3e-4, drift 1.1e-3). The bounds leave ~3x.
    train_gaps = [(t - p) / p for t, p in zip(tricks_train, plain_train)]
    valid_gaps = [(t - p) / p for t, p in zip(tricks_valid, plain_valid)]
    assert max(map(abs, train_gaps)) <= 8e-3, train_gaps
    assert max(map(abs, valid_gaps)) <= 5e-3, valid_gaps
    assert abs(sum(train_gaps) / len(train_gaps)) <= 3e-3, train_gaps


def test_gradient_checkpointing_gives_the_plain_loss_and_gradients(tiny_model_dir, smol_tokenizer):
    """Recomputing each layer in backward (with every other trick on: padding-free attention, lean
    activations, fused LoRA) changes what is kept, never the result."""
    from tuneforge.train.loop import collate_padding_free

    examples = [parse_record(r, 1)[1].example for r in numbered_chats(range(6))]
    batch = collate_padding_free(ChatTokenizer(smol_tokenizer, 0.0).encode(examples))
    results = []
    for checkpointing in (False, True):
        results.append(loss_and_grads(recipe_lora_model(tiny_model_dir, checkpointing), batch))
    (plain_loss, plain_right, plain_n, plain_grads), (loss, right, n, grads) = results
    assert loss == pytest.approx(plain_loss, rel=1e-6) and (right, n) == (plain_right, plain_n)
    assert plain_grads.keys() == grads.keys() and len(grads) > 10
    for name, grad in plain_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-5)


def test_qlora_trains_adapters_on_a_4_bit_base(tmp_path, tiny_model_dir):
    """load_in_4bit: the frozen linear layers are bitsandbytes' NF4 layers (here on the CPU, which
    bitsandbytes runs too), the adapters train, and the adapter it saves loads on the plain base."""
    from helpers import write_jsonl
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneforge.runs.training import train_run
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.modeling import build_model

    data = write_jsonl(tmp_path / "train.jsonl", numbered_chats(range(12)))
    config = TrainConfig(
        model=str(tiny_model_dir), data=data, load_in_4bit=True, n_epochs=3, batch_size=4, learning_rate_multiplier=5
    )
    kinds = {type(m).__name__ for m in build_model(config.resolve(12, 512)).modules()}
    assert "Linear4bit" in kinds  # the base is 4-bit (peft's lora.bnb.Linear4bit wraps bitsandbytes')
    result = train_run(config)
    losses = [float(line.split(",")[1]) for line in (result.run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0] - 0.1, losses
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.run_dir / "adapter")
    assert any("lora_A" in name for name, _ in tuned.named_parameters())


@pytest.mark.parametrize("causal_argument", ["is_causal", "window_size"])
def test_the_cuda_varlen_call_lays_out_what_torchs_varlen_kernel_takes(monkeypatch, causal_argument):
    """The CUDA branch hands PyTorch's varlen flash attention (T, heads, dim) tensors, the boundaries and
    a causal flag (`is_causal` in torch 2.9-2.11, `window_size=(-1, 0)` later). The kernel needs a GPU;
    here a CPU stand-in with the same contract checks our side: layout, grouped-query heads, output."""
    from tuneforge.train import padding_free

    def kernel(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, **causal):
        assert q.shape == k.shape == v.shape and q.ndim == 3  # (tokens, heads, dim), key heads repeated
        assert causal in ({"is_causal": True}, {"window_size": (-1, 0)})
        assert torch.equal(cu_seq_q, cu_seq_k) and cu_seq_q.dtype == torch.int32 and max_q == max_k == 9
        parts = [
            F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v)), is_causal=True, scale=scale)
            for a, b in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist())
        ]
        return torch.cat(parts, dim=1).transpose(0, 1)

    if causal_argument == "is_causal":
        stand_in = lambda q, k, v, cq, ck, mq, mk, *, scale=None, is_causal=False: kernel(  # noqa: E731
            q, k, v, cq, ck, mq, mk, scale=scale, is_causal=is_causal
        )
    else:
        stand_in = lambda q, k, v, cq, ck, mq, mk, *, scale=None, window_size=(-1, -1): kernel(  # noqa: E731
            q, k, v, cq, ck, mq, mk, scale=scale, window_size=window_size
        )
    monkeypatch.setattr(padding_free, "_TORCH_VARLEN", stand_in)
    torch.manual_seed(0)
    starts = torch.tensor([0, 5, 14, 15, 22])
    query, key, value = (torch.randn(1, heads, 22, 16) for heads in (6, 2, 2))  # grouped-query heads
    ours = padding_free._cuda_varlen(query, key, value, starts, 9, 0.25)
    expected = torch.cat(
        [
            F.scaled_dot_product_attention(
                *(t[:, :, a:b] for t in (query, key, value)), is_causal=True, enable_gqa=True
            )
            for a, b in zip(starts[:-1], starts[1:])
        ],
        dim=2,
    ).transpose(1, 2)  # (1, tokens, heads, dim): what the attention layer's output projection reads
    assert ours.shape == expected.shape == (1, 22, 6, 16)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
