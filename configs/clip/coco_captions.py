"""CLIP on COCO Captions (tfds `coco_captions`, prepared by the user as array_record), the
image-text data most users can get: 113k images with five captions each.

The paper's recipe where it fits one machine: AdamW (betas 0.9/0.98, eps 1e-6, weight decay
0.2), lr 5e-4 with 2,000 warmup steps and cosine decay, 32 epochs, 224 x 224 images (random
resized crops), 77 tokens; a batch of 256 pairs instead of 32,768. Image-text retrieval
(R@1/5/10 both ways) and the contrastive loss on the 5,000 validation images.

Variants (arg string):
  variant=X     B/32 (default), B/16, L/14, small/16, tiny/16 (jaxformer.models.clip.VARIANTS).
  loss=X        softmax (CLIP, default) or sigmoid (SigLIP).
  data_dir=DIR  the tfds data dir ("": $TFDS_DATA_DIR or ~/tensorflow_datasets).
  runlocal      a tiny model for a few steps (smoke tests).

  tfds build coco_captions --file_format=array_record
  jaxformer train --config=configs/clip/coco_captions.py --workdir=runs/clip_coco
"""

import ml_collections

from configs import common
from jaxformer.config import parse_arg

TRAIN_IMAGES = 82_783 + 30_504  # train + restval (Karpathy splits).
EPOCHS = 32


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="B/32", loss="softmax", data_dir="", runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(
        name="clip", variant=arg.variant, embed_dim=512, patch_size=32, vision_layers=12,
        vision_width=768, vision_heads=12, vision_mlp_dim=3072, text_layers=12,
        text_width=512, text_heads=8, text_mlp_dim=2048, pool_type="tok",
        activation="quick_gelu", loss=arg.loss, dropout_rate=0.0))
    config.task = ml_collections.ConfigDict(dict(name="contrastive", loss=arg.loss))
    # OpenAI CLIP's pixel statistics and resize filter.
    config.data = ml_collections.ConfigDict(dict(
        name="coco_captions", data_dir=arg.data_dir, train_split="train+restval",
        eval_split="val", image_size=224, crop="inception", min_area=0.9, flip=False,
        mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
        resample="bicubic", context_length=77, vocab_size=49_408, tokenizer_examples=TRAIN_IMAGES,
        read_threads=8))
    batch_size = 256
    num_steps = EPOCHS * TRAIN_IMAGES // batch_size
    config.train = common.train(batch_size=batch_size, num_steps=num_steps, log_every=100,
                                checkpoint_every=2000, compute_dtype="bfloat16")
    config.evals = ml_collections.ConfigDict()
    config.evals.retrieval = common.evaluator("retrieval", every_steps=2000, split="val",
                                              ks=(1, 5, 10))
    config.evals.val_loss = common.evaluator("loss", every_steps=2000, split="val",
                                             num_batches=-1)
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=5e-4, min_lr=0.0, schedule="cosine", warmup_steps=2000,
        decay_steps=num_steps, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.2, grad_clip=1.0))

    if arg.runlocal:
        config.model.update(variant="", embed_dim=16, vision_layers=1, vision_width=16,
                            vision_heads=2, vision_mlp_dim=32, text_layers=1, text_width=16,
                            text_heads=2, text_mlp_dim=32, patch_size=8)
        config.data.update(image_size=16, context_length=16, vocab_size=300,
                           tokenizer_examples=7, read_threads=0, train_split="train")
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1,
                            compute_dtype="float32")
        for entry in config.evals.values():
            entry.update(every_steps=2)
            if entry.type == "loss":
                entry.num_batches = 1
        config.optim.update(warmup_steps=1, decay_steps=4)
    return config
