"""The output layer and the weighted cross-entropy in one pass over chunks of tokens, never holding
the whole (tokens, vocabulary) fp32 logits.

For SmolLM2 the vocabulary is 49 k wide: a batch of 8 x 256 tokens has 400 MB of fp32 logits, and
autograd keeps the logits, their log-softmax and the gradient of each, 1.2 GB or more at the peak.
Here each chunk of CHUNK_TOKENS tokens computes its logits, loss, correct predictions and, in the
same pass, the gradient of the loss with respect to the chunk's hidden states (and to the output
layer's weight when that trains); backward only scales the saved gradients. That costs no extra
matmul (backward needs exactly these two products) and keeps one chunk's fp32 logits alive at
a time. (Full fine-tuning in bf16 also keeps every token's bf16 logits gradient for the output
layer's weight gradient, one matmul at the end: see the forward.)

`torch.nn.functional.linear_cross_entropy` (torch 2.13) chunks the same way, but takes no per-token
weights (Tuneforge's prompt_loss_weight and per-message weights) and returns no predictions for the
accuracy metric; the two are compared in benchmarks/RESULTS.md.
"""

import torch

# 256 x 49 k fp32 logits = 50 MB at a time. 1,024 was as fast, but its chunk's logits, their
# log-softmax and gradient (~400 MB) come on top of every activation at the end of the forward pass,
# the step's peak: 256 lowered the peak RSS by 165 MB (benchmarks/RESULTS.md).
CHUNK_TOKENS = 256


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, token_weights, with_grads: bool, matmul_dtype: torch.dtype):
        # hidden (tokens, hidden); weight (vocab, hidden); targets, token_weights (tokens,)
        hidden_needs_grad = with_grads and ctx.needs_input_grad[0]
        weight_needs_grad = with_grads and ctx.needs_input_grad[1]
        matmul_weight = weight.to(matmul_dtype)
        hidden_grad = torch.empty_like(hidden) if hidden_needs_grad else None
        loss = torch.zeros((), dtype=torch.float32)
        correct = torch.zeros((), dtype=torch.long)
        tokens, vocab = hidden.shape[0], weight.shape[0]
        converts = matmul_dtype != torch.float32  # bf16 logits, then an fp32 copy for the softmax
        # Chunk-sized buffers reused by every chunk. Fresh tensors cost more than the work done in
        # them: glibc serves blocks over 32 MB with a new mmap, so each one's pages fault in, zeroed,
        # on first touch (a 256 x 49 k fp32 log-softmax: 55 ms into a new tensor, 9 ms into a reused one).
        # The output layer's own gradient (full fine-tuning) is one matmul over all tokens at the end,
        # so in bf16 every chunk's logits gradient is kept (tokens x vocab bf16, 174 MB at 1,774
        # tokens): summing per-chunk bf16 products into fp32 converted a 113 MB matrix each time,
        # ~0.37 s per chunk. In fp32 the chunks' products accumulate in place instead.
        keeps_all = weight_needs_grad and converts
        logits_rows = torch.empty((tokens if keeps_all else min(CHUNK_TOKENS, tokens), vocab), dtype=matmul_dtype)
        float_buffer = torch.empty((min(CHUNK_TOKENS, tokens), vocab), dtype=torch.float32) if converts else None
        weight_grad = torch.zeros(weight.shape, dtype=torch.float32) if weight_needs_grad and not converts else None
        for start in range(0, tokens, CHUNK_TOKENS):
            rows = slice(start, start + CHUNK_TOKENS)
            chunk_hidden = hidden[rows].to(matmul_dtype)
            count = chunk_hidden.shape[0]
            chunk_targets, chunk_weights = targets[rows, None], token_weights[rows, None].float()
            logits = torch.mm(
                chunk_hidden, matmul_weight.T, out=logits_rows[rows] if keeps_all else logits_rows[:count]
            )
            # softmax in fp32 whatever the matmul's dtype, in place: one fused pass, unlike logsumexp
            log_probabilities = float_buffer[:count].copy_(logits) if converts else logits
            torch._log_softmax(log_probabilities, -1, False, out=log_probabilities)
            target_log_probabilities = log_probabilities.gather(1, chunk_targets)
            loss -= (target_log_probabilities * chunk_weights).sum()
            # the maximum, not argmax: see loop.predicted_correctly
            correct += (target_log_probabilities >= log_probabilities.amax(-1, keepdim=True)).sum()
            if hidden_needs_grad or weight_needs_grad:
                # d(sum_i w_i CE_i) / d logits_i = w_i (softmax_i - onehot(target_i)), built in place.
                probabilities = log_probabilities.exp_()
                probabilities.scatter_add_(1, chunk_targets, torch.full(chunk_targets.shape, -1.0))
                probabilities.mul_(chunk_weights)
                logits_grad = logits.copy_(probabilities) if converts else probabilities
                if hidden_needs_grad:
                    if hidden_grad.dtype == matmul_dtype:
                        torch.mm(logits_grad, matmul_weight, out=hidden_grad[rows])
                    else:
                        hidden_grad[rows] = logits_grad @ matmul_weight
                if weight_needs_grad and not converts:
                    weight_grad.addmm_(logits_grad.T, chunk_hidden)
        if keeps_all:
            weight_grad = logits_rows.T @ hidden.to(
                matmul_dtype
            )  # (vocab, hidden), rounded once, as autocast's matmul
        ctx.save_for_backward(hidden_grad, weight_grad)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, loss_grad, _correct_grad):
        hidden_grad, weight_grad = ctx.saved_tensors
        if hidden_grad is not None:
            hidden_grad = hidden_grad * loss_grad.to(hidden_grad.dtype)
        if weight_grad is not None:
            weight_grad = (
                weight_grad.to(ctx.weight_dtype).mul_(loss_grad)
                if weight_grad.dtype != ctx.weight_dtype
                else weight_grad * loss_grad
            )  # one new (vocab, hidden) tensor either way
        return hidden_grad, weight_grad, None, None, None, None


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    token_weights: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, int]:
    """sum_i token_weights[i] * cross_entropy(hidden[i] @ weight.T, targets[i]), and the number of
    tokens whose most likely prediction is the target: what the full logits give, without them.

    `dtype` is the matmuls' dtype (bf16 under autocast, as the plain path's output layer runs);
    softmax and loss are fp32. Gradients are computed during the forward pass when grad mode is on."""
    with torch.autocast(hidden.device.type, enabled=False):  # the dtypes are chosen here, explicitly
        loss, correct = _ChunkedLinearCrossEntropy.apply(
            hidden, weight, targets, token_weights, torch.is_grad_enabled(), dtype or hidden.dtype
        )
    return loss, int(correct)
