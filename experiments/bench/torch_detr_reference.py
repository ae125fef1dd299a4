"""Reference timing: Hugging Face `DetrForObjectDetection` (PyTorch eager) train step, beside
`python experiments/bench/detr_matching.py` (jaxformer's step and its matching share).

The same model as the `cpu` DETR (`jaxformer.models.detr.VARIANTS`) with `--queries` object
queries: a ResNet of basic blocks (stem width 32, two stages of 2 blocks, widths 32 and 64;
frozen BatchNorm), a 1x1 projection to width 64, 2 encoder and 2 decoder post-LN layers of 4
heads with ReLU FFNs of 256, dropout 0.1, class (20 + no object) and 3-layer box heads,
auxiliary losses at every decoder layer; the loss with Hungarian matching (class 1, L1 5,
GIoU 2, no-object weight 0.1); AdamW lr 1e-4 (backbone 1e-5), weight decay 1e-4, clipping
0.1; float32. The batch (random 64 x 64 images, 1 to 4 random boxes each) is reused for every
step. Also times HF's matcher alone on the step's outputs. Prints one JSON line.

  pip install torch transformers scipy  # CPU build of torch
  python experiments/bench/torch_detr_reference.py --batch 16 --queries 100 [--threads 2]
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch_timing import add_timing_arguments, seed_and_threads, timed
from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
from transformers.loss.loss_for_object_detection import HungarianMatcher

NUM_CLASSES = 20


def make_model(queries: int) -> DetrForObjectDetection:
    backbone = ResNetConfig(layer_type="basic", embedding_size=32, hidden_sizes=[32, 64],
                            depths=[2, 2], out_features=["stage2"])
    config = DetrConfig(backbone_config=backbone, num_labels=NUM_CLASSES, num_queries=queries,
                        d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4,
                        encoder_ffn_dim=256, decoder_ffn_dim=256, dropout=0.1,
                        auxiliary_loss=True)
    return DetrForObjectDetection(config)


def make_batch(rng, batch: int, size: int):
    images = torch.from_numpy(rng.normal(size=(batch, 3, size, size)).astype(np.float32))
    labels = []
    for _ in range(batch):
        n = int(rng.integers(1, 5))
        centre = rng.uniform(0.2, 0.8, (n, 2))
        extent = rng.uniform(0.1, 0.4, (n, 2))
        labels.append({"class_labels": torch.from_numpy(rng.integers(0, NUM_CLASSES, n)),
                       "boxes": torch.from_numpy(
                           np.concatenate([centre, extent], -1).astype(np.float32))})
    return images, torch.ones(batch, size, size, dtype=torch.long), labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--image", type=int, default=64)
    add_timing_arguments(parser, steps=20, threads=0)
    args = parser.parse_args()
    seed_and_threads(args)
    model = make_model(args.queries).train()
    backbone = [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad]
    others = [p for n, p in model.named_parameters() if "backbone" not in n]
    optimizer = torch.optim.AdamW([{"params": others}, {"params": backbone, "lr": 1e-5}],
                                  lr=1e-4, weight_decay=1e-4)
    images, mask, labels = make_batch(np.random.default_rng(0), args.batch, args.image)

    def step():
        out = model(pixel_values=images, pixel_mask=mask, labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        return out

    step_seconds, out = timed(step, warmup=args.warmup, steps=args.steps)

    # The matcher alone, on the last step's outputs, for the last layer and each auxiliary.
    matcher = HungarianMatcher(class_cost=1, bbox_cost=5, giou_cost=2)
    layers = [{"logits": out.logits, "pred_boxes": out.pred_boxes},
              *[{"logits": a["logits"], "pred_boxes": a["pred_boxes"]}
                for a in out.auxiliary_outputs]]
    match_times = []
    with torch.no_grad():
        for _ in range(args.steps):
            start = time.perf_counter()
            for layer in layers:
                matcher(layer, labels)
            match_times.append(time.perf_counter() - start)
    match_seconds = statistics.median(match_times)
    print(json.dumps({
        "implementation": f"transformers {__import__('transformers').__version__} "
                          f"DetrForObjectDetection, torch {torch.__version__} eager",
        "threads": torch.get_num_threads(), "global_batch": args.batch,
        "queries": args.queries, "image": args.image,
        "num_params": sum(p.numel() for p in model.parameters()),
        "step_seconds_median": step_seconds, "examples_per_sec": args.batch / step_seconds,
        "matching_seconds_median": match_seconds,
        "matching_share": match_seconds / step_seconds}), flush=True)


if __name__ == "__main__":
    main()
