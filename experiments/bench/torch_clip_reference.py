"""Reference timing: `open_clip` (PyTorch eager) CLIP train step, beside
`jaxformer bench --config=configs/clip/emoji.py:variant=X`.

The same model: a ViT image tower (patch embedding without bias, [class] token, learned
positions, LayerNorm before the blocks, pre-LN blocks, quick GELU, LayerNorm after pooling,
projection without bias) and a causal text tower (learned positions, pre-LN blocks, final
LayerNorm, features at the end-of-text token, projection without bias), sizes as
`jaxformer.models.clip.VARIANTS` (`--variant`); the symmetric InfoNCE loss with the learned
temperature (`open_clip.ClipLoss`); AdamW (lr 5e-4, betas 0.9/0.98, eps 1e-6, weight decay
0.1 on matrices only), global-norm clipping 1.0, float32. The batch (random images and token
rows with an end-of-text token) is reused for every step, as `jaxformer bench` does. Prints
one JSON line like `jaxformer bench`: image-text pairs per second.

  pip install torch open_clip_torch  # CPU build of torch
  python experiments/bench/torch_clip_reference.py --variant tiny/4 [--threads 2]
"""

import argparse
import json

import numpy as np
import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from torch_timing import add_timing_arguments, decay_groups, seed_and_threads, timed

# As jaxformer.models.clip.VARIANTS (kept here so that the script needs no jax).
VARIANTS = {
    "tiny": dict(embed_dim=128, vision_width=128, vision_layers=4, vision_heads=4,
                 vision_mlp_dim=512, text_width=128, text_layers=4, text_heads=4,
                 text_mlp_dim=512),
    "small": dict(embed_dim=256, vision_width=256, vision_layers=6, vision_heads=4,
                  vision_mlp_dim=1024, text_width=256, text_layers=6, text_heads=4,
                  text_mlp_dim=1024),
    "B": dict(embed_dim=512, vision_width=768, vision_layers=12, vision_heads=12,
              vision_mlp_dim=3072, text_width=512, text_layers=12, text_heads=8,
              text_mlp_dim=2048),
}


def build(variant: str, image_size: int, context: int, vocab: int) -> torch.nn.Module:
    size, _, patch = variant.partition("/")
    s = VARIANTS[size]
    vision = CLIPVisionCfg(
        layers=s["vision_layers"], width=s["vision_width"],
        head_width=s["vision_width"] // s["vision_heads"],
        mlp_ratio=s["vision_mlp_dim"] / s["vision_width"], patch_size=int(patch),
        image_size=image_size)
    text = CLIPTextCfg(context_length=context, vocab_size=vocab, width=s["text_width"],
                       heads=s["text_heads"], layers=s["text_layers"],
                       mlp_ratio=s["text_mlp_dim"] / s["text_width"])
    return open_clip.CLIP(embed_dim=s["embed_dim"], vision_cfg=vision, text_cfg=text,
                          quick_gelu=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="tiny/4")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    add_timing_arguments(parser, steps=20)
    args = parser.parse_args()

    seed_and_threads(args)
    model = build(args.variant, args.image_size, args.context, args.vocab)
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(decay_groups(params, 0.1),
                                  lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = open_clip.ClipLoss()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.normal(size=(args.batch, 3, args.image_size,
                                               args.image_size)).astype(np.float32))
    # Captions of 4-12 tokens, the end-of-text token (open_clip pools the largest id) last.
    tokens = np.zeros((args.batch, args.context), np.int64)
    for row in range(args.batch):
        length = int(rng.integers(4, 13))
        tokens[row, :length] = rng.integers(1, args.vocab - 1, length)
        tokens[row, length] = args.vocab - 1
    text = torch.from_numpy(tokens)

    def step():
        image_features, text_features, logit_scale = model(images, text)
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        return loss.item()

    seconds, _ = timed(step, warmup=args.warmup, steps=args.steps)
    print(json.dumps({
        "framework": f"torch {torch.__version__} eager, open_clip {open_clip.__version__}",
        "config": args.variant, "threads": torch.get_num_threads(),
        "global_batch": args.batch, "num_params": sum(p.numel() for p in params),
        "step_seconds_median": seconds, "examples_per_sec": args.batch / seconds,
    }))


if __name__ == "__main__":
    main()
