"""Reference timing: `timm`'s `VisionTransformer` (PyTorch eager) train step, beside
`jaxformer bench --config=configs/vit/fashion_mnist.py`.

The same model (805,130 parameters, as `jaxformer params` prints for the config): 28 x 28
grey images in 7 x 7 patches (a strided convolution with bias), a [class] token, learned
positions, 6 pre-LN blocks of width 128 with 4 heads and an MLP of 256 (exact GELU), LayerNorm
epsilon 1e-6, the [class] token's final LayerNorm features into a 10-way linear head, no
dropout; softmax cross-entropy; AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.05
on matrices only), global-norm clipping 1.0, float32, the attention `timm` picks by default.
The batch (random images and labels) is reused for every step, as `jaxformer bench` does.
Prints one JSON line like `jaxformer bench`.

  pip install torch timm  # CPU build of torch
  python experiments/bench/torch_vit_reference.py [--steps 100] [--threads 2]
"""

import argparse
import json

import numpy as np
import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.nn import functional as F
from torch_timing import add_timing_arguments, decay_groups, seed_and_threads, timed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--patch_size", type=int, default=7)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mlp_dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    add_timing_arguments(parser, steps=100)
    args = parser.parse_args()

    seed_and_threads(args)
    model = VisionTransformer(
        img_size=args.image_size, patch_size=args.patch_size, in_chans=1,
        num_classes=args.classes, embed_dim=args.width, depth=args.layers,
        num_heads=args.heads, mlp_ratio=args.mlp_dim / args.width, qkv_bias=True,
        class_token=True, global_pool="token")
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(decay_groups(params, 0.05),
                                  lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.normal(size=(args.batch, 1, args.image_size,
                                               args.image_size)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, args.classes, args.batch))

    def step():
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss.item()

    seconds, _ = timed(step, warmup=args.warmup, steps=args.steps)
    print(json.dumps({
        "framework": f"torch {torch.__version__} eager, timm {timm.__version__}",
        "config": f"ViT {args.layers} x {args.width}, patch {args.patch_size}",
        "threads": torch.get_num_threads(), "global_batch": args.batch,
        "num_params": sum(p.numel() for p in params),
        "step_seconds_median": seconds, "examples_per_sec": args.batch / seconds,
    }))


if __name__ == "__main__":
    main()
