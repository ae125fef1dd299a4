"""Reference timing: PyTorch's own `nn.Transformer` layers (eager) as the translation model of
"Attention Is All You Need", beside `jaxformer bench --config=configs/translation/bible_enes.py`.

The same model (7,577,600 parameters, as `jaxformer params` prints for the config): 3 + 3
post-LN blocks (`nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer`, `norm_first=False`,
no final LayerNorm) of width 256 with 4 heads and a ReLU MLP of 1024, one 8,000 x 256 embedding
shared by the source, the target and (transposed, no bias) the output softmax, embeddings
scaled by sqrt(256) plus sinusoidal positions; dropout 0.1 on the embeddings, the sub-layer
outputs and the MLP's hidden layer, none on the attention weights; label-smoothed (0.1)
cross-entropy over the target tokens that are not padding; Adam (betas 0.9/0.98, eps 1e-9, no
weight decay, no clipping), float32. The batch's shape is jaxformer's first batch of the
config (64 sentence pairs in the 40-token length bucket); rows are padded (id 0, masked as
keys) from random lengths. It is reused for every step, as `jaxformer bench` does. Prints one
JSON line like `jaxformer bench`.

  pip install torch  # CPU build
  python experiments/bench/torch_translation_reference.py [--steps 20] [--threads 2]
"""

import argparse
import json
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch_timing import add_timing_arguments, seed_and_threads, timed

PAD_ID, BOS_ID = 0, 1


def sinusoids(length: int, width: int) -> torch.Tensor:
    """The paper's positional encodings, `[length, width]`."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates)
    return table


class Translator(nn.Module):
    def __init__(self, vocab, width, heads, mlp_dim, layers, dropout, max_length=512):
        super().__init__()
        self.width = width
        self.embedding = nn.Embedding(vocab, width)
        nn.init.normal_(self.embedding.weight, std=width ** -0.5)
        self.register_buffer("positions", sinusoids(max_length, width), persistent=False)
        self.dropout = nn.Dropout(dropout)

        def unrolled(layer):
            layer.self_attn.dropout = 0.0  # No dropout on the attention weights.
            if hasattr(layer, "multihead_attn"):
                layer.multihead_attn.dropout = 0.0
            return layer

        self.encoder = nn.ModuleList(unrolled(nn.TransformerEncoderLayer(
            width, heads, mlp_dim, dropout, batch_first=True, norm_first=False))
            for _ in range(layers))
        self.decoder = nn.ModuleList(unrolled(nn.TransformerDecoderLayer(
            width, heads, mlp_dim, dropout, batch_first=True, norm_first=False))
            for _ in range(layers))

    def embed(self, tokens):
        x = self.embedding(tokens) * self.width ** 0.5 + self.positions[:tokens.shape[1]]
        return self.dropout(x)

    def forward(self, inputs, decoder_inputs):
        source_pad = inputs == PAD_ID
        target_pad = decoder_inputs == PAD_ID
        length = decoder_inputs.shape[1]  # True above the diagonal: the future, masked.
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        memory = self.embed(inputs)
        for layer in self.encoder:
            memory = layer(memory, src_key_padding_mask=source_pad)
        x = self.embed(decoder_inputs)
        for layer in self.decoder:
            x = layer(x, memory, tgt_mask=causal, tgt_key_padding_mask=target_pad,
                      memory_key_padding_mask=source_pad, tgt_is_causal=True)
        return x @ self.embedding.weight.T


def padded_rows(rng, rows, length, vocab):
    """`[rows, length]` ids: each row a random length in [length / 2, length], then PAD_ID."""
    tokens = np.zeros((rows, length), np.int64)
    for row in range(rows):
        n = int(rng.integers(length // 2, length + 1))
        tokens[row, :n] = rng.integers(2, vocab, n)
    return torch.from_numpy(tokens)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mlp_dim", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--source_length", type=int, default=40)
    parser.add_argument("--target_length", type=int, default=40)
    add_timing_arguments(parser, steps=20)
    args = parser.parse_args()

    seed_and_threads(args)
    model = Translator(args.vocab, args.width, args.heads, args.mlp_dim, args.layers, 0.1)
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=args.width ** -0.5, betas=(0.9, 0.98), eps=1e-9)
    rng = np.random.default_rng(0)
    inputs = padded_rows(rng, args.batch, args.source_length, args.vocab)
    targets = padded_rows(rng, args.batch, args.target_length, args.vocab)
    decoder_inputs = torch.cat([torch.full((args.batch, 1), BOS_ID), targets[:, :-1]], 1)
    decoder_inputs = decoder_inputs.masked_fill(targets == PAD_ID, PAD_ID)

    def step():
        logits = model(inputs, decoder_inputs)
        loss = F.cross_entropy(logits.reshape(-1, args.vocab), targets.reshape(-1),
                               ignore_index=PAD_ID, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    seconds, _ = timed(step, warmup=args.warmup, steps=args.steps)
    tokens = int((targets != PAD_ID).sum())
    print(json.dumps({
        "framework": f"torch {torch.__version__} eager, nn.Transformer layers",
        "config": f"{args.layers} + {args.layers} x {args.width}",
        "threads": torch.get_num_threads(), "global_batch": args.batch,
        "num_params": sum(p.numel() for p in params),
        "step_seconds_median": seconds, "examples_per_sec": args.batch / seconds,
        "target_tokens_per_sec": tokens / seconds,
    }))


if __name__ == "__main__":
    main()
