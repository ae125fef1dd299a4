"""CLIP weights: a small random transformers `CLIPModel` imported gives its embeddings and
logits, exported loads back with the same outputs; the tokenizer carried over encodes as
`CLIPTokenizer`; `jaxformer zero-shot` runs on the import; the OpenAI sizes have
transformers' parameter counts; broken checkpoints are refused naming the tensor."""

import json
import shutil
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from PIL import Image  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402
from tokenizers import pre_tokenizers  # noqa: E402

from jaxformer import cli  # noqa: E402
from jaxformer.data import caption_bpe  # noqa: E402
from jaxformer.errors import UserError  # noqa: E402
from jaxformer.weights import clip as clip_weights  # noqa: E402
from jaxformer.weights import convert  # noqa: E402

WORDS = ("photo", "cat", "dog", "of", "the", "a", "it's", "12", "café")
TEXTS = ["a photo of a cat", "The  DOG!", "it's 12 photos of the café dog", "<|endoftext|>x"]
CONTEXT, IMAGE_SIZE = 16, 32


def clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A tiny vocabulary laid out as CLIP's: bytes, bytes ending a word, merges spelling
    `WORDS`, then start and end of text."""
    words = caption_bpe.clip_pre_tokenizer()
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {piece: i for i, piece in enumerate([*alphabet, *(a + "</w>" for a in alphabet)])}
    merges = []
    for text in WORDS:
        for word, _ in words.pre_tokenize_str(text):
            pieces = [*word[:-1], word[-1] + "</w>"]
            left = pieces[0]
            for right in pieces[1:]:
                if (left, right) not in merges:
                    merges.append((left, right))
                    vocab.setdefault(left + right, len(vocab))
                left += right
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return vocab, merges


def hf_model(vocab_size: int):
    """A seeded random CLIPModel with every weight (norms and temperature too) drawn, and
    the legacy `eos_token_id` 2 of OpenAI's configs (pooling at the largest id)."""
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        projection_dim=24,
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=CONTEXT, bos_token_id=0, eos_token_id=2,
                         pad_token_id=1),
        vision_config=dict(hidden_size=40, intermediate_size=56, num_hidden_layers=2,
                           num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8))
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(2.3)
            elif "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3 + float(name.endswith("weight")))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 0.2))
    return model


def hf_outputs(model, pixels: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    pixel_values=torch.tensor(pixels.transpose(0, 3, 1, 2)))
    return {k: getattr(out, k).numpy() for k in ("image_embeds", "text_embeds",
                                                 "logits_per_image")}


def ours(run, pixels: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    images = np.asarray(run.task.encode_images(run.params, pixels))
    texts = np.asarray(run.task.encode_texts(run.params, ids))
    logits = float(run.task.logit_scale(run.params)) * images @ texts.T
    return {"image_embeds": images, "text_embeds": texts, "logits_per_image": logits}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from jaxformer.inference.workdir import load_run

    root = tmp_path_factory.mktemp("clip")
    vocab, merges = clip_vocab()
    model = hf_model(len(vocab))
    hf_dir, workdir = root / "hf", root / "workdir"
    model.save_pretrained(hf_dir)
    hf_tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=merges)
    hf_tokenizer.save_pretrained(hf_dir)
    assert cli.main(["import-weights", f"--from={hf_dir}", "--family=clip",
                     f"--workdir={workdir}"]) == 0
    pixels = np.random.default_rng(0).normal(size=(3, IMAGE_SIZE, IMAGE_SIZE, 3))
    return types.SimpleNamespace(
        root=root, model=model, hf_dir=hf_dir, workdir=workdir, run=load_run(str(workdir)),
        vocab=vocab, merges=merges, hf_tokenizer=hf_tokenizer,
        pixels=pixels.astype(np.float32))


@pytest.mark.slow
def test_logits_match_transformers(imported):
    run = imported.run
    assert run.config.model.activation == "quick_gelu" and run.config.data.context_length == 16
    ids = run.data.tokenize(TEXTS)  # Padded with 0; transformers pads with the end of text.
    hf_ids = imported.hf_tokenizer(TEXTS, padding="max_length", max_length=CONTEXT).input_ids
    want = hf_outputs(imported.model, imported.pixels, np.array(hf_ids))
    got = ours(run, imported.pixels, ids)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-4, err_msg=key)
    assert np.abs(want["logits_per_image"]).max() > 1.0  # Not trivially small.


def test_tokenizer_encodes_as_clip_tokenizer(imported, tmp_path):
    data = imported.run.data
    assert (data.bos_id, data.eot_id, data.pad_id) == (len(imported.vocab) - 2,
                                                      len(imported.vocab) - 1, 0)
    assert (imported.workdir / "assets" / caption_bpe.ASSET_NAME).exists()
    (tmp_path / "vocab.json").write_text(json.dumps(imported.vocab))
    (tmp_path / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in imported.merges))
    from_files, names = clip_weights.read_tokenizer(str(tmp_path))
    assert names == ["vocab.json", "merges.txt"]
    for text in TEXTS:
        want = imported.hf_tokenizer(text).input_ids
        assert data.tokenize([text])[0, :len(want)].tolist() == want, text
        assert caption_bpe.token_rows(from_files, [text], CONTEXT).tolist() == \
            data.tokenize([text]).tolist()
    assert data.tokenizer.decode(data.tokenize(["A photo of the  dog!"])[0]) == \
        "a photo of the dog !"


def test_export_loads_in_transformers_with_the_same_outputs(imported):
    out = imported.root / "exported"
    convert.export_weights(str(imported.workdir), str(out))
    model = transformers.CLIPModel.from_pretrained(out).eval()
    assert model.config.text_config.eos_token_id == len(imported.vocab) - 1
    order = clip_weights.export_order(imported.run.data.tokenizer)
    np.testing.assert_array_equal(order, np.arange(len(imported.vocab)))  # CLIP's already.
    tokenizer = transformers.CLIPTokenizer.from_pretrained(out)
    ids = np.array(tokenizer(TEXTS, padding="max_length", max_length=CONTEXT).input_ids)
    np.testing.assert_array_equal(
        ids, imported.hf_tokenizer(TEXTS, padding="max_length", max_length=CONTEXT).input_ids)
    want = hf_outputs(imported.model, imported.pixels, ids)
    got = hf_outputs(model, imported.pixels, ids)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # The image processor does the run's evaluation view: resize, central crop, normalise.
    from jaxformer.data import image_pipeline

    data = imported.run.config.data
    image = np.random.default_rng(5).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    theirs = transformers.CLIPImageProcessor.from_pretrained(out)(
        images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    preprocess = image_pipeline.preprocess_from_config(data, channels=3,
                                                       image_size=data.image_size)
    ours_ = preprocess.normalize(preprocess.eval_view(image))
    assert theirs.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    # The same up to the rounding of resized pixels: at most one level of 255 apart.
    levels = np.abs(ours_ - theirs) * np.asarray(data.std) * 255
    assert levels.max() < 1.01 and levels.mean() < 0.1


@pytest.mark.slow
def test_zero_shot_command_gives_the_models_probabilities(imported, capsys):
    from jaxformer.inference import two_tower

    image = imported.root / "picture.png"
    pixels = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    labels, template = ["cat", "dog", "photo"], "a photo of a {}."
    capsys.readouterr()
    assert cli.main(["zero-shot", f"--workdir={imported.workdir}", f"--image={image}",
                     f"--labels={','.join(labels)}", f"--template={template}"]) == 0
    printed = dict(reversed(line.split()) for line in capsys.readouterr().out.splitlines())
    probabilities = np.array([float(printed[label]) for label in labels])
    assert abs(probabilities.sum() - 1) < 3e-3
    data = imported.run.data
    logits = hf_outputs(imported.model, two_tower.image_batch(data, [str(image)]),
                        data.tokenize([template.format(label) for label in labels]))
    want = torch.softmax(torch.tensor(logits["logits_per_image"][0]), 0).numpy()
    np.testing.assert_allclose(probabilities, want, atol=6e-4)


# The published config.json of OpenAI's CLIPs (the fields the model reads); L/14's sizes
# are in its old-style `*_config_dict`s, which replace `*_config`.
B32 = {"model_type": "clip", "projection_dim": 512, "logit_scale_init_value": 2.6592,
       "text_config": {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
                       "num_attention_heads": 8, "num_hidden_layers": 12,
                       "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                       "layer_norm_eps": 1e-05, "bos_token_id": 0, "eos_token_id": 2,
                       "pad_token_id": 1},
       "vision_config": {"hidden_size": 768, "intermediate_size": 3072,
                         "num_attention_heads": 12, "num_hidden_layers": 12,
                         "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu",
                         "layer_norm_eps": 1e-05, "num_channels": 3},
       "text_config_dict": None, "vision_config_dict": None}
B16 = {**B32, "vision_config": {**B32["vision_config"], "patch_size": 16}}
L14 = {**B32, "projection_dim": 768,
       "text_config_dict": {"hidden_size": 768, "intermediate_size": 3072,
                            "num_attention_heads": 12, "num_hidden_layers": 12},
       "vision_config_dict": {"hidden_size": 1024, "intermediate_size": 4096,
                              "num_attention_heads": 16, "num_hidden_layers": 24,
                              "patch_size": 14}}


@pytest.mark.parametrize("hf, variant, count", [
    (B32, "B/32", 151_277_313),  # openai/clip-vit-base-patch32
    (B16, "B/16", 149_620_737),  # openai/clip-vit-base-patch16
    (L14, "L/14", 427_616_513),  # openai/clip-vit-large-patch14
])
def test_full_size_parameter_counts(tmp_path, hf, variant, count):
    (tmp_path / "config.json").write_text(json.dumps(hf))
    config, _ = convert.import_config(str(tmp_path), "clip")
    assert config.model.variant == variant and config.data.image_size == 224
    ours_count = sum(int(np.prod(s)) for s in convert.abstract_params(config).values())
    with torch.device("meta"):
        model = transformers.CLIPModel(transformers.CLIPConfig(**hf))
    assert ours_count == sum(p.numel() for p in model.parameters()) == count


def test_image_processor_sets_the_normalisation(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(B32))
    transformers.CLIPImageProcessor(size={"shortest_edge": 256}, image_mean=[0.5, 0.4, 0.3],
                                    image_std=[0.2, 0.25, 0.3]).save_pretrained(tmp_path)
    config, _ = convert.import_config(str(tmp_path), "clip")
    assert config.data.resize_size == 256 and config.data.image_size == 224
    np.testing.assert_allclose(config.data.mean, [0.5, 0.4, 0.3])
    np.testing.assert_allclose(config.data.std, [0.2, 0.25, 0.3])


@pytest.mark.parametrize("resample, method", [(3, "bicubic"), (2, "bilinear")])
def test_imported_eval_view_is_the_processors(tmp_path, resample, method):
    """The evaluation view of an imported CLIP is its processor's output (Pillow's resize, the
    processor's backend without torchvision; torchvision's bilinear filter differs by up to
    2 levels), whose filter (bicubic by default) it takes; with the other filter it is off by
    tens of levels."""
    from jaxformer.data import image_pipeline

    (tmp_path / "config.json").write_text(json.dumps(B32))
    pillow = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    processor = pillow(size={"shortest_edge": 240}, resample=resample)
    processor.save_pretrained(tmp_path)
    config, _ = convert.import_config(str(tmp_path), "clip")
    assert config.data.resample == method
    image = np.random.default_rng(0).integers(0, 256, (300, 380, 3), dtype=np.uint8)
    theirs = processor(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)

    def levels_apart(data) -> np.ndarray:
        preprocess = image_pipeline.preprocess_from_config(data, channels=3, image_size=224)
        ours = preprocess.normalize(preprocess.eval_view(image))
        return np.abs(ours - theirs) * np.asarray(data["std"]) * 255

    levels = levels_apart(config.data)
    assert levels.max() < 1.01 and levels.mean() < 0.1
    other = "bilinear" if method == "bicubic" else "bicubic"
    assert levels_apart(dict(config.data.to_dict(), resample=other)).max() > 10


@pytest.mark.parametrize("change, named", [
    ("drop", "text_model.final_layer_norm.bias"),
    ("add", "text_model.extra.weight"),
    ("reshape", "vision_model.embeddings.class_embedding"),
])
def test_broken_checkpoints_are_refused_naming_the_tensor(imported, tmp_path, change, named):
    broken = tmp_path / "hf"
    shutil.copytree(imported.hf_dir, broken)
    tensors = load_file(broken / "model.safetensors")
    if change == "drop":
        del tensors[named]
    elif change == "add":
        tensors[named] = np.zeros(3, np.float32)
    else:
        tensors[named] = tensors[named][:-1]
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        convert.import_weights(str(broken), "clip", str(tmp_path / "w"), dry_run=True)
    assert not (tmp_path / "w").exists()


def test_tokenizer_must_fit_the_text_tower(imported, tmp_path):
    hf = json.loads((imported.hf_dir / "config.json").read_text())
    hf["text_config"]["eos_token_id"] = 7
    (tmp_path / "config.json").write_text(json.dumps(hf))
    shutil.copy(imported.hf_dir / "tokenizer.json", tmp_path)
    with pytest.raises(UserError, match="eos_token_id is 7, the tokenizer's <|endoftext|> is"):
        clip_weights.import_tokenizer(str(tmp_path), str(tmp_path))
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="has no tokenizer"):
        clip_weights.import_tokenizer(str(tmp_path), str(tmp_path))


@pytest.mark.slow
def test_a_clip_trained_here_exports_with_its_tokenizer(tmp_path):
    """A vocabulary trained here has its special tokens first; the export reorders it as
    CLIP's (embedding rows and tokenizer ids), so transformers' CLIPModel pools the end of
    text, and AutoTokenizer encodes as the run does."""
    from jaxformer import config as config_lib
    from jaxformer.inference.workdir import load_run
    from jaxformer.train import trainer
    from tests.helpers import ROOT

    config = config_lib.load_config(f"{ROOT}/configs/clip/emoji.py:runlocal")
    config_lib.apply_overrides(config, ["train.num_steps=2", "train.compute_dtype=float32"])
    config.evals = {}
    trainer.train(config, str(tmp_path / "run"))
    convert.export_weights(str(tmp_path / "run"), str(tmp_path / "hf"), log=lambda _: None)
    run = load_run(str(tmp_path / "run"))
    assert (run.data.pad_id, run.data.bos_id, run.data.eot_id) == (0, 1, 2)
    model = transformers.CLIPModel.from_pretrained(tmp_path / "hf").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    texts = ["a grinning face", "Red apple!", "rocket  Ship; 42 café"]
    length = run.config.data.context_length
    ids = np.array(tokenizer(texts, padding="max_length", max_length=length,
                             truncation=True).input_ids)
    order = clip_weights.export_order(run.data.tokenizer)
    vocab = run.data.tokenizer.vocab_size
    assert (ids[:, 0] == vocab - 2).all() and order[vocab - 1] == 2
    np.testing.assert_array_equal(order[ids], run.data.tokenize(texts))  # Renumbered only.
    size = run.config.data.image_size
    pixels = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    want = ours(run, pixels, run.data.tokenize(texts))
    got = hf_outputs(model, pixels, ids)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-4, err_msg=key)
