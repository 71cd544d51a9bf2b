"""Shared prefixes computed once (tuneforge/train/shared_prefix.py): LoRA training speed on the bundled
model with and without, on support chats that all start with the same long system prompt.

Run: `python -m benchmarks.shared_prefix [--steps 6] [--batch-size 8] [--precision fp32|bf16]
[--prompt-loss-weight 0] [--default-prompt 0]`

The chats: a ~200-token system prompt (Pip's, examples/support_chat.jsonl, with the house rules
spelled out), then one short exchange from that file; with `--default-prompt K`, K chats of each
batch have the template's default system prompt instead (a second family, as replay examples
are). Each step's batch runs forward, backward and clipping twice from the same weights, unshared
and shared (which goes first alternates), each timed on its own; one AdamW step follows. Both
tok/s count the examples' tokens, i.e. the same work done (a shared row holds fewer tokens); the
first step of each is a warm-up and not counted. The largest relative gap between the two losses
shows they compute the same thing.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

SYSTEM_PROMPT = (
    "You are Pip, the support assistant for Lumen Ledger, an invoicing and bookkeeping tool for "
    "freelancers and small studios. Answer in a friendly, plain tone, in at most four short steps, and "
    "always name the tab and the button the customer should use. Never promise refunds, credits, "
    "discounts or delivery dates on behalf of the company: say that the billing team decides and "
    "offer to open a ticket. Never ask for passwords, full card numbers or bank login details; if a "
    "customer sends them, tell them to change them at once. When a question is about taxes or the "
    "law, explain what Lumen Ledger does and suggest asking an accountant for advice. If you do not "
    "know the answer, say so and offer to pass the question to a human colleague, who answers within "
    "one working day. Sign every reply with '- Pip, Lumen Ledger Support'. Plans: Starter (one user, "
    "fifty invoices a month), Studio (five users, unlimited invoices) and Agency (unlimited users, "
    "priority support and custom branding)."
)


def build_chats(count: int, batch_size: int = 8, default_prompt: int = 0) -> list[dict]:
    """`count` chats: the long system prompt, then one single-exchange chat of the example file each.
    In every `batch_size` chats, `default_prompt` of them (spread through the batch) have no system
    prompt, so the chat template inserts its default one, as it does in the forgetting guard's replay
    examples: a batch then holds two families of prefixes."""
    from benchmarks.train_runners import EXAMPLES

    records = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    exchanges = [r["messages"][1:] for r in records if len(r["messages"]) == 3]
    spread = {round(j * batch_size / default_prompt) for j in range(default_prompt)} if default_prompt else set()
    return [
        {
            "messages": ([] if i % batch_size in spread else [{"role": "system", "content": SYSTEM_PROMPT}])
            + exchanges[i % len(exchanges)]
        }
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="measured steps, after one warm-up step")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--prompt-loss-weight", type=float, default=0.0)
    parser.add_argument(
        "--default-prompt",
        type=int,
        default=0,
        help="chats per batch without the system prompt (the template's default one): two prefix families",
    )
    args = parser.parse_args()

    from benchmarks.train_runners import MODEL
    from tuneforge.data.formats import parse_record
    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.models.catalog import load_tokenizer
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.loop import build_optimizer, collate_padding_free
    from tuneforge.train.modeling import TokenLoss
    from tuneforge.train.sft import build_model

    steps = args.steps + 1
    chats = build_chats(steps * args.batch_size, args.batch_size, args.default_prompt)
    examples = ChatTokenizer(load_tokenizer(MODEL), args.prompt_loss_weight).encode(
        [parse_record(chat, 1)[1].example for chat in chats]
    )
    with tempfile.TemporaryDirectory() as directory:  # the config wants a data path; build_model does not read it
        data = Path(directory) / "train.jsonl"
        data.write_text("")
        config = TrainConfig(
            model=MODEL,
            data=data,
            method="lora",
            precision=args.precision,
            batch_size=args.batch_size,
            prompt_loss_weight=args.prompt_loss_weight,
            lora_dropout=0.0,  # the same computation in both layouts
        ).resolve(len(examples), 8192)
    model = build_model(config)
    loss = TokenLoss(model, config)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, 2e-4, 0.0)

    seconds = {False: [], True: []}
    batch_tokens, loss_gaps = [], []
    for step in range(steps):
        chunk = examples[step * args.batch_size : (step + 1) * args.batch_size]
        total_weight = sum(float(e.loss_weights[1:].sum()) for e in chunk)
        losses = {}
        for share in (False, True) if step % 2 == 0 else (True, False):
            batch = collate_padding_free(chunk, share_prefix=share)
            optimizer.zero_grad(set_to_none=True)
            started = time.perf_counter()
            weighted, _, _ = loss(batch)
            (weighted / total_weight).backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            seconds[share].append(time.perf_counter() - started)
            losses[share] = weighted.item()
            if share:
                shared_tokens = batch.input_ids.shape[1]  # the row: shared tokens once
        optimizer.step()
        batch_tokens.append(sum(len(e.input_ids) for e in chunk))
        loss_gaps.append(abs(losses[True] - losses[False]) / losses[False])
        print(
            f"step {step}: {batch_tokens[-1]} tokens in the examples, {shared_tokens} in the shared row; "
            f"unshared {seconds[False][-1]:.2f} s, shared {seconds[True][-1]:.2f} s",
            flush=True,
        )

    tokens = sum(batch_tokens[1:])
    unshared, shared = tokens / sum(seconds[False][1:]), tokens / sum(seconds[True][1:])
    # Each step times both layouts back to back: on a busy machine the per-step ratio's median is
    # steadier than the ratio of the totals.
    step_ratios = sorted(a / b for a, b in zip(seconds[False][1:], seconds[True][1:]))
    print(
        f"\nLoRA {config.precision}, batch {args.batch_size} ({args.default_prompt} with the default system prompt), "
        f"prompt_loss_weight {args.prompt_loss_weight}, "
        f"{torch.get_num_threads()} threads, {args.steps} steps of ~{tokens // args.steps} example tokens:\n"
        f"  unshared {unshared:.0f} tok/s, shared prefix {shared:.0f} tok/s ({shared / unshared:.2f}x; per step "
        f"{step_ratios[0]:.2f}x to {step_ratios[-1]:.2f}x, median {step_ratios[len(step_ratios) // 2]:.2f}x), "
        f"the same tokens counted for both; losses at most {max(loss_gaps):.1e} apart (relative)"
    )


if __name__ == "__main__":
    main()
