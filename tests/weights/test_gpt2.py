"""GPT-2 weights in and out: logit parity with `transformers`, the round trip through
`export-weights`, the published sizes' parameter counts, checkpoint and config errors, the
byte-level BPE tokenizer against `transformers`' ids, and `sample`, `evaluate` and a
fine-tuning run on an imported workdir."""

import json
import shutil

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Tokenizer,
    GPT2TokenizerFast,
)

from jaxformer import cli
from jaxformer.config import apply_overrides, load_config, read_workdir_config
from jaxformer.data import shakespeare
from jaxformer.data.tokenizers import ByteLevelBPETokenizer, load_tokenizer
from jaxformer.errors import UserError
from jaxformer.inference.workdir import load_run
from jaxformer.registry import build_data_and_task
from jaxformer.train import transfer
from jaxformer.weights import convert, gpt2

VOCAB = 300
EOT = "<|endoftext|>"
TEXT = "ROMEO: But soft!  what light\n\nthrough yonder window — naïve ☃ " + EOT + " breaks?"
# The published config.json of each GPT-2 size, and its parameter count (head tied).
PUBLISHED = {
    "gpt2": (dict(n_embd=768, n_layer=12, n_head=12), 124_439_808),
    "gpt2-medium": (dict(n_embd=1024, n_layer=24, n_head=16), 354_823_168),
    "gpt2-large": (dict(n_embd=1280, n_layer=36, n_head=20), 774_030_080),
    "gpt2-xl": (dict(n_embd=1600, n_layer=48, n_head=25), 1_557_611_200),
}
COMMON = dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", vocab_size=50257,
              n_positions=1024, n_ctx=1024, activation_function="gelu_new", resid_pdrop=0.1,
              embd_pdrop=0.1, attn_pdrop=0.1, layer_norm_epsilon=1e-5, initializer_range=0.02,
              bos_token_id=50256, eos_token_id=50256)


def _byte_level_bpe(text: str) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tokenizer


def _hf_model() -> GPT2LMHeadModel:
    """A small GPT-2 with every weight random (LayerNorms too) and a non-default epsilon."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                        layer_norm_epsilon=1e-4, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight")
                          or name.endswith("ln_f.weight") else 0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The HF model and tokenizer, saved and imported with the command line once."""
    root = tmp_path_factory.mktemp("gpt2")
    model = _hf_model()
    model.save_pretrained(root / "hf")
    tokenizer = GPT2TokenizerFast(tokenizer_object=_byte_level_bpe(
        shakespeare.read_corpus()[:100_000]), bos_token=EOT, eos_token=EOT, unk_token=EOT)
    tokenizer.save_pretrained(root / "hf")
    (root / "tfds").mkdir()
    assert cli.main(["import-weights", f"--from={root / 'hf'}", "--family=gpt",
                     f"--workdir={root / 'run'}",
                     f"--config.data.data_dir={root / 'tfds'}"]) == 0
    return root, model, tokenizer


def _logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens).long()).logits.numpy()


@pytest.mark.slow
def test_logits_match_transformers(imported):
    root, model, _ = imported
    run = load_run(str(root / "run"))
    assert run.config.train.compute_dtype == "float32"
    assert run.task.model.layer_norm_epsilon == 1e-4
    tokens = np.random.default_rng(0).integers(0, VOCAB, (3, 32)).astype(np.int32)
    ours = jax.jit(run.task.model.apply)({"params": run.params}, tokens)
    np.testing.assert_allclose(np.asarray(ours), _logits(model, tokens), rtol=1e-4, atol=1e-4)


def test_export_round_trip_is_exact(imported, tmp_path):
    root, model, tokenizer = imported
    assert cli.main(["export-weights", f"--workdir={root / 'run'}", f"--to={tmp_path}"]) == 0
    exported = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert exported.config.to_diff_dict() == model.config.to_diff_dict()
    original = model.state_dict()
    for name, tensor in exported.state_dict().items():
        torch.testing.assert_close(tensor, original[name], rtol=0, atol=0, msg=name)
    tokens = np.random.default_rng(1).integers(0, VOCAB, (2, 32))
    np.testing.assert_array_equal(_logits(exported, tokens), _logits(model, tokens))
    assert AutoTokenizer.from_pretrained(tmp_path)(TEXT)["input_ids"] == tokenizer(TEXT)[
        "input_ids"]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_sizes_count_as_transformers(name, tmp_path):
    sizes, count = PUBLISHED[name]
    (tmp_path / "config.json").write_text(json.dumps({**COMMON, **sizes}))
    config, _ = convert.import_config(str(tmp_path), "gpt")
    ours = sum(int(np.prod(shape)) for shape in convert.abstract_params(config).values())
    with torch.device("meta"):
        reference = GPT2LMHeadModel(GPT2Config(**COMMON, **sizes))
    assert ours == sum(p.numel() for p in reference.parameters()) == count


def _checkpoint_copy(imported, tmp_path, change=None):
    root = imported[0]
    shutil.copytree(root / "hf", tmp_path / "hf")
    tensors = load_file(root / "hf" / "model.safetensors")
    if change:
        change(tensors)
    save_file(tensors, tmp_path / "hf" / "model.safetensors")
    return tmp_path / "hf"


def test_a_base_model_checkpoint_with_buffers_and_head_imports_the_same(imported, tmp_path):
    """An older GPT2Model file: no `transformer.` prefix, causal-mask buffers, an `lm_head`."""
    def base_model(tensors):
        head = tensors["transformer.wte.weight"]
        renamed = {name.removeprefix("transformer."): t for name, t in tensors.items()}
        tensors.clear()
        tensors.update(renamed, **{"lm_head.weight": head})
        for i in range(2):
            tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
            tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)

    hf_dir = _checkpoint_copy(imported, tmp_path, base_model)
    convert.import_weights(str(hf_dir), "gpt", str(tmp_path / "run"), log=lambda _: None)
    ours, theirs = load_run(str(tmp_path / "run")).params, load_run(
        str(imported[0] / "run")).params
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


@pytest.mark.parametrize("change, named", [
    (lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"), "transformer.h.1.mlp.c_fc.bias"),
    (lambda t: t.update({"transformer.h.0.attn.q_norm.weight": np.ones(8, np.float32)}),
     "transformer.h.0.attn.q_norm.weight"),
    (lambda t: t.update({"transformer.wpe.weight": np.zeros((16, 32), np.float32)}),
     "transformer.wpe.weight"),
])
def test_checkpoint_errors_name_the_tensor(imported, tmp_path, change, named):
    hf_dir = _checkpoint_copy(imported, tmp_path, change)
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        convert.import_weights(str(hf_dir), "gpt", str(tmp_path / "run"), dry_run=True,
                               log=lambda _: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, named", [
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
    ({"activation_function": "relu"}, "activation_function"),
    ({"n_inner": 40}, "n_inner"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings"),
])
def test_configs_the_model_cannot_express_are_refused(imported, tmp_path, setting, named):
    hf_dir = _checkpoint_copy(imported, tmp_path)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, **setting}))
    with pytest.raises(UserError, match=named):
        convert.import_config(str(hf_dir), "gpt")


def test_tokenizer_ids_are_transformers(imported, tmp_path):
    root, _, tokenizer = imported
    ours = load_run(str(root / "run")).task.tokenizer
    assert isinstance(ours, ByteLevelBPETokenizer) and ours.vocab_size == VOCAB
    assert ours.encode(TEXT) == tokenizer(TEXT)["input_ids"]
    assert ours.decode(ours.encode(TEXT)) == TEXT
    # An older directory: vocab.json and merges.txt, no tokenizer.json.
    tokenizer.backend_tokenizer.model.save(str(tmp_path))
    (tmp_path / "assets").mkdir()
    assert gpt2.import_tokenizer(str(tmp_path), str(tmp_path / "assets")) == [
        "tokenizer.json", "vocab.json", "merges.txt"]
    built = load_tokenizer(tmp_path / "assets")
    assert built.encode(TEXT) == GPT2Tokenizer.from_pretrained(tmp_path)(TEXT)["input_ids"]
    assert built.encode(TEXT) == ours.encode(TEXT)


def test_a_byte_level_bpe_learned_from_text_reproduces_any_text(tmp_path):
    text = shakespeare.read_corpus()[:20_000]
    learned = ByteLevelBPETokenizer.train(text, 320)
    assert learned.vocab_size == 320 and learned.token_id("<|endoftext|>") == 0
    assert len(learned.encode(text)) < 0.7 * len(text.encode())  # Merges learned.
    assert learned.decode(learned.encode(TEXT)) == TEXT
    learned.save(tmp_path / "tokenizer.json")
    padded = load_tokenizer(tmp_path).with_vocab_size(400)
    assert padded.vocab_size == 400 and padded.encode(TEXT) == learned.encode(TEXT)
    assert padded.decode([*learned.encode("ROMEO"), 399]) == "ROMEO"  # Padding: nothing.


def test_sample_continues_a_prompt_as_transformers_greedy(imported, capsys):
    root, model, tokenizer = imported
    assert cli.main(["sample", f"--workdir={root / 'run'}", "--prompt=ROMEO:", "--greedy",
                     "--max_new_tokens=8"]) == 0
    ids = tokenizer("ROMEO:")["input_ids"]
    for _ in range(8):
        ids.append(int(_logits(model, np.array([ids]))[0, -1].argmax()))
    assert capsys.readouterr().out.split("\n" + "-" * 40)[0] == tokenizer.decode(ids)


def test_evaluate_gives_transformers_validation_loss(imported):
    root, model, _ = imported
    assert cli.main(["evaluate", f"--workdir={root / 'run'}"]) == 0
    record = json.loads((root / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    config = read_workdir_config(str(root / "run"))
    data = shakespeare.build(config.data, workdir=str(root / "run"))
    losses = []
    for batch in data.eval_iter(batch_size=config.train.batch_size,
                                num_batches=config.evals.val.num_batches):
        with torch.no_grad():
            logits = model(torch.from_numpy(batch["inputs"]).long()).logits
            losses.append(torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), torch.from_numpy(batch["targets"]).long().flatten()))
    assert record["eval/val/loss"] == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)


def test_fine_tuning_config_starts_from_the_imported_run(imported, tmp_path):
    """`configs/gpt/pretrained.py:init_from=RUN`: RUN's model in shorter windows, its
    tokenizer copied to the new workdir, and every parameter loaded from RUN."""
    run = str(imported[0] / "run")
    config = load_config(convert.resolve_config_spec(
        f"configs/gpt/pretrained.py:init_from={run},block=16"))
    apply_overrides(config, [f"data.data_dir={imported[0] / 'tfds'}"])
    data, task = build_data_and_task(config, str(tmp_path))
    assert json.loads((tmp_path / "assets" / "tokenizer.json").read_text()) == json.loads(
        (imported[0] / "run" / "assets" / "tokenizer.json").read_text())
    assert (data.block_size, task.model.block_size, task.model.num_layers) == (16, 32, 2)
    loaded = transfer.init_from(config, task, jax.eval_shape(task.init, jax.random.key(0)))
    expected = transfer.flat_paths(load_run(run).params)
    assert sorted(loaded) == sorted(expected)
    for path, array in loaded.items():
        np.testing.assert_array_equal(array, expected[path])


@pytest.mark.slow
def test_a_character_level_run_exports_with_its_own_vocabulary(tmp_path, capsys):
    """A run of the character tokenizer (73 symbols; `data.vocab_size` unused) loads in
    `transformers` with the run's vocabulary, no end-of-text ids, and its logits."""
    (tmp_path / "tfds").mkdir()
    assert cli.main(["train", "--config=configs/gpt/shakespeare_char.py:runlocal",
                     f"--workdir={tmp_path / 'run'}",
                     f"--config.data.data_dir={tmp_path / 'tfds'}"]) == 0
    assert cli.main(["export-weights", f"--workdir={tmp_path / 'run'}",
                     f"--to={tmp_path / 'hf'}"]) == 0
    exported = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert exported.config.vocab_size == 73
    assert exported.config.bos_token_id is None and exported.config.eos_token_id is None
    run = load_run(str(tmp_path / "run"))
    tokens = np.random.default_rng(0).integers(0, 73, (2, 32)).astype(np.int32)
    ours = jax.jit(run.task.model.apply)({"params": run.params}, tokens)
    np.testing.assert_allclose(np.asarray(ours), _logits(exported, tokens), rtol=1e-4,
                               atol=1e-4)
    # It has no tokenizer that transformers reads, so it cannot be imported back.
    assert cli.main(["import-weights", f"--from={tmp_path / 'hf'}", "--family=gpt",
                     f"--workdir={tmp_path / 'back'}"]) == 2
    assert ("config.json: vocab_size=73: a GPT-2 checkpoint is read with its byte-level BPE, "
            "of at least 257 tokens") in capsys.readouterr().err
    assert not (tmp_path / "back").exists()
