"""Reference timing: Hugging Face `transformers` `BertForPreTraining`, PyTorch eager train step.

The baseline `jaxformer bench --config=configs/bert/books_pretraining.py[:variant=X]` is
compared with: the same sizes (`--variant` as `jaxformer.models.bert.VARIANTS`: tiny 2 layers
width 128, mini 4 layers width 256, ...; MLP 4x the width, vocab 8192, 512 positions, 2 segment
ids, post-LN, exact GELU, LayerNorm epsilon 1e-12, tied decoder with its own bias), dropout 0.1
on hidden states and attention weights, the same batch (64 sequences of 128 tokens, ~15 % of
the tokens predicted, at most 20 per sequence), AdamW (lr 5e-4, betas 0.9/0.999, eps 1e-6,
weight decay 0.01 on matrices only), global-norm clipping 1.0, float32, eager mode, the
attention implementation `transformers` picks by default.

The step is the one a user of `transformers` writes: `model(..., labels=...,
next_sentence_label=...)`, with label -100 at the positions that are not predicted. That
forward computes the masked-LM logits (the transform, then the `vocab x width` decoder) at every
one of the 128 positions, where jaxformer gathers the (at most 20) masked positions first; the
gathering is part of what is compared, not an accident of the reference. `--gather` instead
runs the encoder (`model.bert`), then the same heads (`model.cls`) on the masked positions only
(the same loss, about a sixth of the head's work), to compare the implementations on the same
work.

Batches are random but shaped like the books pipeline's (`jaxformer/data/
bert_pretraining_pipeline.py`): `[CLS] A [SEP] B [SEP]`, 10 % of the rows shorter than the
sequence and padded with id 0 (masked out by `attention_mask`), segment ids 0/1, masked
positions 80 % [MASK], 10 % a random token, 10 % unchanged, next-sentence labels 0/1. One batch
is reused for every step, as `jaxformer bench` does. Prints one JSON line like
`jaxformer bench`.

  pip install torch transformers  # CPU build of torch
  python experiments/bench/torch_bert_reference.py --variant tiny [--steps 20] [--threads 2]
  python experiments/bench/torch_bert_reference.py --variant mini [--gather]
"""

import argparse
import json

import numpy as np
import torch
import transformers
from torch.nn import functional as F
from torch_timing import add_timing_arguments, decay_groups, seed_and_threads, timed

# As jaxformer.models.bert.VARIANTS (kept here so that the script needs no jax).
VARIANTS = {
    "base": dict(num_layers=12, d_model=768, num_heads=12, mlp_dim=3072),
    "large": dict(num_layers=24, d_model=1024, num_heads=16, mlp_dim=4096),
    "tiny": dict(num_layers=2, d_model=128, num_heads=2, mlp_dim=512),
    "mini": dict(num_layers=4, d_model=256, num_heads=4, mlp_dim=1024),
    "small": dict(num_layers=4, d_model=512, num_heads=8, mlp_dim=2048),
    "medium": dict(num_layers=8, d_model=512, num_heads=8, mlp_dim=2048),
}
PAD_ID, CLS_ID, SEP_ID, MASK_ID, NUM_SPECIAL = 0, 2, 3, 4, 5
SHORT_SEQ_PROB, MASK_PROB = 0.1, 0.15


def make_batch(rng, batch, seq_length, max_predictions, vocab):
    """Input ids, token type ids, attention mask, MLM labels (-100 where not predicted) and
    next-sentence labels, as int64 tensors."""
    input_ids = np.zeros((batch, seq_length), np.int64)
    token_type_ids = np.zeros((batch, seq_length), np.int64)
    labels = np.full((batch, seq_length), -100, np.int64)
    for row in range(batch):
        tokens = seq_length - 3
        if rng.random() < SHORT_SEQ_PROB:
            tokens = int(rng.integers(2, seq_length - 3 + 1))
        a = int(rng.integers(1, tokens))
        b = tokens - a
        ids = np.concatenate([[CLS_ID], rng.integers(NUM_SPECIAL, vocab, a), [SEP_ID],
                              rng.integers(NUM_SPECIAL, vocab, b), [SEP_ID]])
        length = len(ids)
        candidates = np.flatnonzero((ids != CLS_ID) & (ids != SEP_ID))
        count = min(max_predictions, max(1, int(round(length * MASK_PROB))))
        positions = np.sort(rng.choice(candidates, count, replace=False))
        labels[row, positions] = ids[positions]
        draw = rng.random(count)
        ids[positions[draw < 0.8]] = MASK_ID
        random = draw >= 0.9
        ids[positions[random]] = rng.integers(NUM_SPECIAL, vocab, int(random.sum()))
        input_ids[row, :length] = ids
        token_type_ids[row, a + 2:length] = 1
    attention_mask = (input_ids != PAD_ID).astype(np.int64)
    next_sentence = rng.integers(0, 2, batch)
    return {name: torch.from_numpy(value) for name, value in dict(
        input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
        labels=labels, next_sentence_label=next_sentence).items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="mini", choices=sorted(VARIANTS))
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--max_predictions", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    add_timing_arguments(parser, steps=20)
    parser.add_argument("--gather", action="store_true",
                        help="masked-LM head at the masked positions only")
    args = parser.parse_args()

    seed_and_threads(args)
    size = VARIANTS[args.variant]
    config = transformers.BertConfig(
        vocab_size=args.vocab, hidden_size=size["d_model"], num_hidden_layers=size["num_layers"],
        num_attention_heads=size["num_heads"], intermediate_size=size["mlp_dim"],
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02,
        layer_norm_eps=1e-12, pad_token_id=PAD_ID, tie_word_embeddings=True)
    model = transformers.BertForPreTraining(config)
    model.train()
    params = list(model.parameters())  # Tied weights appear once.
    optimizer = torch.optim.AdamW(decay_groups(params, 0.01),
                                  lr=5e-4, betas=(0.9, 0.999), eps=1e-6)
    batch = make_batch(np.random.default_rng(0), args.batch, args.seq_length,
                       args.max_predictions, args.vocab)

    def gathered_loss():
        labels, predicted = batch["labels"], batch["labels"] != -100
        sequence, pooled = model.bert(batch["input_ids"], attention_mask=batch["attention_mask"],
                                      token_type_ids=batch["token_type_ids"])[:2]
        mlm_logits, nsp_logits = model.cls(sequence[predicted], pooled)
        return (F.cross_entropy(mlm_logits, labels[predicted])
                + F.cross_entropy(nsp_logits, batch["next_sentence_label"]))

    def step():
        loss = gathered_loss() if args.gather else model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss.item()

    seconds, _ = timed(step, warmup=args.warmup, steps=args.steps)
    print(json.dumps({
        "framework": f"torch {torch.__version__} eager, transformers {transformers.__version__}",
        "config": args.variant, "attention": model.config._attn_implementation,
        "mlm_head": "masked positions" if args.gather else "every position",
        "threads": torch.get_num_threads(), "global_batch": args.batch,
        "num_params": sum(p.numel() for p in params),
        "step_seconds_median": seconds, "examples_per_sec": args.batch / seconds,
        "tok_per_sec": args.batch * args.seq_length / seconds,
    }))


if __name__ == "__main__":
    main()
