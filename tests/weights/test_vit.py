"""ViT weights: Hugging Face ViTForImageClassification in and out with logit parity, the
full-size parameter counts, tensor errors, the image processor's normalisation, `evaluate`
on an imported workdir, and fine-tuning from one with init_from."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTModel

from jaxformer import cli, registry
from jaxformer import config as config_lib
from jaxformer.data import image_pipeline, imagenet2012
from jaxformer.errors import UserError
from jaxformer.inference.workdir import load_run
from jaxformer.models.vit import resize_position_embedding
from jaxformer.train import trainer, transfer
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.weights import convert
from tests.helpers import ROOT

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
IMAGENET_STATS = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
FASHION = os.path.join(ROOT, "configs/vit/fashion_mnist.py")
TRANSFER = os.path.join(ROOT, "configs/vit/fashion_mnist_transfer.py")


def _hf_model(directory, **config) -> ViTForImageClassification:
    """A small random ViT, every LayerNorm included, saved to `directory`. The embeddings are
    small (variance ~1e-5), so that a wrong LayerNorm epsilon changes the logits."""
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**SMALL, **config)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_scale = name.endswith("weight") and param.ndim == 1
            std = 0.003 if ".embeddings." in name else 0.2
            param.copy_((1.0 if is_scale else 0.0) + std * torch.randn_like(param))
    model.save_pretrained(directory)
    return model


def _import(hf_dir, workdir, *args) -> None:
    assert cli.main(["import-weights", f"--from={hf_dir}", "--family=vit",
                     f"--workdir={workdir}", *args]) == 0


def _hf_logits(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():  # NHWC -> NCHW: the same pixels.
        return model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))).logits.numpy()


def _logits(workdir, images: np.ndarray) -> np.ndarray:
    """The imported model's logits, its task built from the data's spec (no data read)."""
    config = config_lib.read_workdir_config(workdir)
    spec = registry.lookup("data", config.data.name).spec(config.data)
    task = registry.lookup("tasks", config.task.name).build(config, spec)
    params, _ = Checkpointer.read_params(workdir)
    return np.asarray(task.predict(params, {"image": images}))


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """(HF model, its dir, the imported workdir): RGB, 1000 classes, ImageNet's config."""
    root = tmp_path_factory.mktemp("vit_imagenet")
    hf_dir, workdir = root / "hf", root / "workdir"
    model = _hf_model(hf_dir, image_size=24, patch_size=8, num_labels=1000)
    (hf_dir / "preprocessor_config.json").write_text(json.dumps(dict(
        image_processor_type="ViTImageProcessor", do_resize=True,
        size={"height": 24, "width": 24}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, **IMAGENET_STATS)))
    _import(hf_dir, workdir)  # float32 without asking: the README's 1e-4 parity.
    return model, str(hf_dir), str(workdir)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """(HF model, the imported workdir): grayscale 14x14, 10 classes, Fashion-MNIST's config."""
    root = tmp_path_factory.mktemp("vit_fashion")
    model = _hf_model(root / "hf", image_size=14, patch_size=7, num_channels=1, num_labels=10)
    _import(root / "hf", root / "workdir", f"--config={FASHION}:runlocal,source=subset")
    return model, str(root / "workdir")


def test_imported_logits_match_hugging_face(imagenet):
    model, _, workdir = imagenet
    config = config_lib.read_workdir_config(workdir)
    assert (config.data.name, config.data.image_size, config.model.patch_size) == (
        "imagenet2012", 24, 8)
    assert config.model.layer_norm_epsilon == 1e-12 and config.model.representation_size == 0
    images = np.random.default_rng(0).standard_normal((3, 24, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(_logits(workdir, images), _hf_logits(model, images),
                               rtol=1e-4, atol=1e-4)


def test_export_round_trip_gives_the_same_model(imagenet, tmp_path):
    model, _, workdir = imagenet
    convert.export_weights(workdir, str(tmp_path / "hf"), log=lambda _: None)
    exported = ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert exported.config.layer_norm_eps == 1e-12
    images = np.random.default_rng(1).standard_normal((2, 24, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(_hf_logits(exported, images), _hf_logits(model, images),
                               rtol=1e-6, atol=1e-6)
    original = load_file(os.path.join(imagenet[1], "model.safetensors"))
    back = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert sorted(back) == sorted(original)


def test_image_processor_sets_the_normalisation_and_is_exported(imagenet, tmp_path):
    _, _, workdir = imagenet
    data = config_lib.read_workdir_config(workdir).data
    np.testing.assert_allclose(data.mean, IMAGENET_STATS["image_mean"], rtol=1e-6)
    np.testing.assert_allclose(data.std, IMAGENET_STATS["image_std"], rtol=1e-6)
    assert data.resize_size == 0
    convert.export_weights(workdir, str(tmp_path / "hf"), log=lambda _: None)
    processor = ViTImageProcessor.from_pretrained(tmp_path / "hf")
    assert processor.resample == 2  # The run's filter, bilinear.
    image = np.random.default_rng(2).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    theirs = processor(images=image, return_tensors="np")["pixel_values"][0]
    preprocess = image_pipeline.preprocess_from_config(data, channels=3, image_size=224)
    ours = preprocess.normalize(preprocess.eval_view(image))
    np.testing.assert_allclose(ours, theirs.transpose(1, 2, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,hf,expected", [
    ("vit-base-patch16-224", {}, 86_567_656),
    ("vit-large-patch16-224", dict(hidden_size=1024, num_hidden_layers=24,
                                   num_attention_heads=16, intermediate_size=4096), 304_326_632),
])
def test_full_size_parameter_counts(tmp_path, name, hf, expected):
    config = ViTConfig(num_labels=1000, **hf)  # The published config.json's values.
    (tmp_path / "config.json").write_text(config.to_json_string())
    jax_config, _ = convert.import_config(str(tmp_path), "vit")
    ours = sum(int(np.prod(s)) for s in convert.abstract_params(jax_config).values())
    with torch.device("meta"):
        theirs = sum(p.numel() for p in ViTForImageClassification(config).parameters())
    assert ours == theirs == expected, name


def _edit(tensors, change):
    name = "vit.encoder.layer.1.attention.attention.key.weight"
    if change == "missing":
        del tensors[name]
    elif change == "extra":
        tensors["vit.encoder.extra.weight"] = np.zeros((32, 32), np.float32)
        name = "vit.encoder.extra.weight"
    else:
        tensors[name] = np.zeros((32, 16), np.float32)
    return name


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_tensor_errors_name_the_tensor(imagenet, tmp_path, change):
    source = imagenet[1]
    shutil.copytree(source, tmp_path / "hf")
    tensors = load_file(os.path.join(source, "model.safetensors"))
    name = _edit(tensors, change)
    save_file(tensors, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(UserError, match=name.replace(".", r"\.")):
        convert.import_weights(str(tmp_path / "hf"), "vit", str(tmp_path / "w"), dry_run=True)
    assert not (tmp_path / "w").exists()


def test_dry_run_lists_the_mapping(imagenet, tmp_path):
    lines = []
    convert.import_weights(imagenet[1], "vit", str(tmp_path / "w"), dry_run=True,
                           log=lines.append)
    assert ("vit.encoder.layer.0.attention.attention.query.weight, "
            "vit.encoder.layer.0.attention.attention.key.weight, "
            "vit.encoder.layer.0.attention.attention.value.weight  ->  "
            "encoder/transformer/block_0/attention/qkv/kernel  (concatenate, transpose)") in lines
    assert "nothing written" in lines[-1] and not (tmp_path / "w").exists()


def test_data_that_does_not_fit_the_checkpoint_is_named(imagenet, tmp_path):
    with pytest.raises(UserError, match="num_channels 3.*fashion_mnist.*1-channel"):
        convert.import_config(imagenet[1], "vit", config_spec=f"{FASHION}:source=subset")
    config = json.loads((open(os.path.join(imagenet[1], "config.json"))).read())
    config["id2label"] = {str(i): f"c{i}" for i in range(10)}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="10 classes.*imagenet2012.*1000"):
        convert.import_config(str(tmp_path), "vit")


def test_a_base_model_gets_a_new_zero_head(imagenet, tmp_path):
    """A `ViTModel` (bare names, a pooler, no classifier; an ImageNet-21k checkpoint's
    form): the encoder is the checkpoint's, the pooler dropped, the head new and zero."""
    model = ViTModel(imagenet[0].config, add_pooling_layer=True).eval()
    model.load_state_dict({k.removeprefix("vit."): v for k, v in
                           imagenet[0].state_dict().items() if k.startswith("vit.")},
                          strict=False)
    model.save_pretrained(tmp_path / "hf")
    lines = []
    convert.import_weights(str(tmp_path / "hf"), "vit", str(tmp_path / "w"), log=lines.append,
                           overrides=["train.compute_dtype=float32"])
    assert lines[-1].endswith("initialised as the model does): head")
    params, _ = Checkpointer.read_params(str(tmp_path / "w"))
    assert params["head"]["kernel"].shape == (32, 1000) and not params["head"]["kernel"].any()
    # A random head on the [class] token's features gives what it gives on transformers'.
    rng = np.random.default_rng(4)
    params["head"] = dict(kernel=rng.standard_normal((32, 1000)).astype(np.float32),
                          bias=rng.standard_normal(1000).astype(np.float32))
    config = config_lib.read_workdir_config(str(tmp_path / "w"))
    spec = registry.lookup("data", config.data.name).spec(config.data)
    task = registry.lookup("tasks", config.task.name).build(config, spec)
    images = rng.standard_normal((2, 24, 24, 3)).astype(np.float32)
    with torch.no_grad():
        features = model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
    expected = features.last_hidden_state[:, 0].numpy() @ params["head"]["kernel"]
    np.testing.assert_allclose(np.asarray(task.predict(params, {"image": images})),
                               expected + params["head"]["bias"], rtol=1e-4, atol=1e-4)


def test_evaluate_without_imagenet_is_one_line(imagenet, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert cli.main(["evaluate", f"--workdir={imagenet[2]}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxformer evaluate: error:") and "imagenet2012" in err
    assert "\n" not in err


def test_attention_map_of_an_import_needs_no_imagenet(imagenet, tmp_path, monkeypatch,
                                                     capsys):
    """The ImageNet data builds without its files: the command predicts what the Hugging Face
    model predicts for the same pixels."""
    from PIL import Image

    model, hf_dir, workdir = imagenet
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    image = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    out = tmp_path / "map.png"
    assert cli.main(["attention-map", f"--workdir={workdir}", f"--image={tmp_path / 'image.png'}",
                     f"--out={out}"]) == 0
    pixels = ViTImageProcessor.from_pretrained(hf_dir)(images=image, return_tensors="np")
    logits = _hf_logits(model, pixels["pixel_values"].transpose(0, 2, 3, 1))
    expected = imagenet2012.class_names()[int(logits.argmax())]
    assert f"predicted {expected} " in capsys.readouterr().out
    assert Image.open(out).size[0] > 0 and not any(
        p.name not in ("image.png", "map.png") for p in tmp_path.iterdir())


def test_evaluate_an_imported_workdir(fashion, capsys):
    model, workdir = fashion
    assert cli.main(["evaluate", f"--workdir={workdir}", "--eval=test_loss"]) == 0
    out = capsys.readouterr().out
    loss = float(out.split("eval/test_loss/loss ")[1].split()[0])
    # The same test images through Hugging Face's model: 2 batches of 16 (runlocal).
    data = load_run(workdir).data
    batches = list(data.eval_iter(batch_size=16, num_batches=2, split="test"))
    images = np.concatenate([b["image"] for b in batches])
    labels = torch.from_numpy(np.concatenate([b["label"] for b in batches]).astype(np.int64))
    logits = torch.from_numpy(_hf_logits(model, images))
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(),
                                 abs=1e-4)


@pytest.mark.slow
def test_fine_tune_from_an_imported_workdir(imagenet, tmp_path):
    source = imagenet[2]  # RGB ImageNet classes -> grey Fashion-MNIST, a new head.
    config = config_lib.load_config(f"{TRANSFER}:runlocal,source=subset,init_from={source}")
    # The source's architecture, not fashion_mnist.py:runlocal's (2 heads, epsilon 1e-6).
    assert config.model.layer_norm_epsilon == 1e-12 and config.model.num_heads == 4
    config_lib.apply_overrides(config, ["train.num_steps=2"])
    config.evals = {}  # Training steps only.
    last = trainer.train(config, str(tmp_path / "probe"))
    assert np.isfinite(last["train/loss"])
    trained = transfer.flat_paths(jax.device_get(load_run(str(tmp_path / "probe")).params))
    src = transfer.flat_paths(Checkpointer.read_params(source)[0])
    # The 3 x 3 position grid of the 24 x 24 import, resized to 32 x 32's 4 x 4.
    np.testing.assert_allclose(trained["encoder/pos_embedding"],
                               resize_position_embedding(src["encoder/pos_embedding"], (4, 4)),
                               rtol=1e-6)
    # The colour patch kernel seen by grey images: summed over its input channels.
    np.testing.assert_allclose(trained["encoder/embedding/kernel"],
                               src["encoder/embedding/kernel"].sum(axis=2, keepdims=True),
                               rtol=1e-6)
    for path in src:
        if path.startswith("encoder/") and path not in ("encoder/pos_embedding",
                                                        "encoder/embedding/kernel"):
            np.testing.assert_array_equal(trained[path], src[path])
    assert trained["head/kernel"].shape == (32, 10)
    # And back to Hugging Face: the fine-tuned model computes the same there.
    convert.export_weights(str(tmp_path / "probe"), str(tmp_path / "hf"), log=lambda _: None)
    exported = ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    images = np.random.default_rng(3).standard_normal((2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(_logits(str(tmp_path / "probe"), images),
                               _hf_logits(exported, images), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("resample, method", [(None, "bilinear"), (3, "bicubic")])
def test_processor_filter_is_imported_and_exported(tmp_path, resample, method):
    """The processor's resize filter (ViTImageProcessor's default: bilinear) becomes
    `data.resample`; the export writes it back."""
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(
        ViTConfig(image_size=224, architectures=["ViTModel"]).to_json_string())
    processor = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                 "size": {"height": 224, "width": 224}, **IMAGENET_STATS}
    if resample is not None:
        processor["resample"] = resample
    (hf_dir / "preprocessor_config.json").write_text(json.dumps(processor))
    config, _ = convert.import_config(str(hf_dir), "vit")
    assert config.data.resample == method
    bad = dict(processor, resample=9)
    (hf_dir / "preprocessor_config.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match="resample 9"):
        convert.import_config(str(hf_dir), "vit")
