"""Reference timing: a plain PyTorch eager GPT train step (nanoGPT's model.py, same recipe).

The baseline `jaxformer bench --config=configs/gpt/shakespeare_char.py:cpu` is compared with:
same model (4 layers, 4 heads, width 128, block 64, vocab 65, tied head, biases), same batch
(12), AdamW (weight decay on matrices only), global-norm clipping 1.0, float32, eager mode.
Prints one JSON line like `jaxformer bench`.

  pip install torch  # CPU build
  python experiments/bench/torch_gpt_reference.py [--steps 200] [--vocab 65]
"""

import argparse
import json
import math

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch_timing import decay_groups, timed


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model, num_heads):
        super().__init__()
        self.c_attn = nn.Linear(d_model, 3 * d_model)
        self.c_proj = nn.Linear(d_model, d_model)
        self.num_heads = num_heads

    def forward(self, x):
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)
                   for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, d_model, num_heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, num_heads)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab, block, layers, heads, d_model):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(block, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx, targets):
        t = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d_model", type=int, default=128)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = GPT(args.vocab, args.block, args.layers, args.heads, args.d_model)
    optimizer = torch.optim.AdamW(decay_groups(model.parameters(), 0.1),
                                  lr=1e-3, betas=(0.9, 0.99))
    x = torch.randint(0, args.vocab, (args.batch, args.block))
    y = torch.randint(0, args.vocab, (args.batch, args.block))

    def step():
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    seconds, _ = timed(step, warmup=args.warmup, steps=args.steps)
    print(json.dumps({
        "framework": f"torch {torch.__version__} eager", "threads": torch.get_num_threads(),
        "num_params": sum(p.numel() for p in model.parameters()),
        "step_seconds_median": seconds, "tokens_per_sec": args.batch * args.block / seconds,
    }))


if __name__ == "__main__":
    main()
