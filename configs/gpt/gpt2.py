"""GPT-2 at its real sizes on synthetic tokens: the throughput / MFU benchmark config.

Vocabulary 50,257, context 1,024, bfloat16 compute, GPT-2's optimizer settings (AdamW,
LR 6e-4, beta2 0.95, weight decay 0.1, clipping 1.0, warmup 2000, cosine to 6e-5).

Args: variant=gpt2-small|gpt2-medium|gpt2-large|gpt2-xl (default gpt2-small), batch=N
(global batch), runlocal (tiny model, few steps).

  jaxformer bench --config=configs/gpt/gpt2.py:variant=gpt2-small,batch=16
"""

import ml_collections

from configs import common
from jaxformer.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, variant="gpt2-small", batch=16, runlocal=False)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(
        name="gpt", variant=arg.variant, num_layers=12, num_heads=12, d_model=768, mlp_ratio=4,
        dropout_rate=0.0))
    config.task = ml_collections.ConfigDict(dict(name="lm"))
    config.data = ml_collections.ConfigDict(dict(
        name="synthetic", tokenizer="ids", vocab_size=50257, block_size=1024, data_dir=""))
    config.train = common.train(batch_size=arg.batch, num_steps=600000,
                                compute_dtype="bfloat16", log_every=10, checkpoint_every=2000)
    config.evals = ml_collections.ConfigDict()
    config.evals.val = common.evaluator("loss", every_steps=2000, split="validation",
                                        num_batches=20, perplexity_of="loss")
    common.add_transfer(config)
    config.optim = ml_collections.ConfigDict(dict(
        name="adamw", lr=6e-4, min_lr=6e-5, schedule="cosine", warmup_steps=2000,
        decay_steps=600000, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0))
    config.sample = ml_collections.ConfigDict(dict(
        prompt="0", max_new_tokens=20, temperature=1.0, top_k=0, top_p=1.0))
    if arg.runlocal:
        config.model.variant = "tiny"
        config.data.update(vocab_size=512, block_size=32)
        config.train.update(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1,
                            compute_dtype="float32")
        config.evals.val.update(every_steps=2, num_batches=2)
        config.optim.update(warmup_steps=1, decay_steps=4)
    return config
