"""DETR weights in and out: a small random `DetrForObjectDetection` (transformers' ResNet
backbone, BatchNorm statistics and layer norms randomised) imported gives Hugging Face's
logits and boxes, padded images included; its export loads back into transformers with the
same outputs; the full-size models have Hugging Face's sizes and every tensor a place (also
in timm's layout, the published checkpoints'); `jaxformer detect` runs on the import."""

import json
import re

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

from jaxformer import cli
from jaxformer.data.coco_detection import CLASS_NAMES
from jaxformer.errors import UserError
from jaxformer.inference.workdir import load_run
from jaxformer.weights import convert, hf_files
from jaxformer.weights import detr as detr_weights

NAMES = ["cat", "dog", "kite", "boat", "tie"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
SIZE = 64


def small_config() -> DetrConfig:
    backbone = ResNetConfig(embedding_size=32, hidden_sizes=[32, 64], depths=[2, 2],
                            layer_type="basic", out_features=["stage2"])
    return DetrConfig(backbone_config=backbone, d_model=32, encoder_layers=2,
                      decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                      encoder_ffn_dim=48, decoder_ffn_dim=48, num_queries=6,
                      id2label=dict(enumerate(NAMES)))


def randomise(model: torch.nn.Module) -> None:
    """Every BatchNorm statistic and affine map, layer norm and bias away from its
    initialisation, so that a tensor mapped to the wrong place shows; linear layers at the
    scale 1 / sqrt(fan_in) (at DETR's initialisation, std 0.02, attention is uniform and the
    predictions hardly depend on the image)."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.ndim == 2 and "position_embeddings" not in name:
                tensor.normal_(0.0, tensor.shape[1] ** -0.5)
            elif name.endswith(("running_var", "normalization.weight", "layer_norm.weight",
                                "layernorm.weight")):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.normal_(0.0, 0.2)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("detr")
    torch.manual_seed(0)
    model = DetrForObjectDetection(small_config()).eval()
    randomise(model)
    model.save_pretrained(root / "hf")
    processor = {"image_processor_type": "DetrImageProcessor", "do_rescale": True,
                 "rescale_factor": 1 / 255, "image_mean": MEAN, "image_std": STD,
                 "size": {"shortest_edge": SIZE, "longest_edge": SIZE}}
    (root / "hf" / hf_files.PROCESSOR_NAME).write_text(json.dumps(processor))
    assert cli.main(["import-weights", f"--from={root / 'hf'}", "--family=detr",
                     f"--workdir={root / 'run'}"]) == 0
    return root, model


def hf_outputs(model, images, masks):
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
                    pixel_mask=torch.from_numpy(masks.astype(np.int64)))
    return out.logits.numpy(), out.pred_boxes.numpy()


def test_outputs_match_hugging_face(imported):
    root, model = imported
    run = load_run(str(root / "run"))
    assert list(run.config.data.class_names) == NAMES == list(run.task.class_names)
    assert list(run.config.data.mean) == pytest.approx(MEAN)
    assert list(run.config.data.scales) == [SIZE] == [run.config.data.max_size]
    images = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    masks = np.ones((2, SIZE, SIZE), bool)
    masks[1, 40:], masks[1, :, 24:] = False, False  # The second image is 40 x 24, padded.
    images[~masks] = 0.0
    images[0, :32] += 1.0  # Not the same noise everywhere: the positions tell.
    logits, boxes = hf_outputs(model, images, masks)
    dimmer, _ = hf_outputs(model, images[:1] / 2, masks[:1])
    assert np.abs(dimmer - logits[:1]).max() > 0.05  # The predictions see the image.
    out = jax.jit(run.task.predict)(run.params, {"image": images, "pixel_mask": masks})
    np.testing.assert_allclose(out["logits"], logits, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["boxes"], boxes, atol=1e-4, rtol=0)


def test_export_loads_in_transformers(imported, tmp_path):
    root, model = imported
    convert.export_weights(str(root / "run"), str(tmp_path / "out"))
    assert load_file(tmp_path / "out" / "model.safetensors").keys() == load_file(
        root / "hf" / "model.safetensors").keys()
    loaded = DetrForObjectDetection.from_pretrained(tmp_path / "out").eval()
    assert loaded.config.id2label == dict(enumerate(NAMES))
    images = np.random.default_rng(1).normal(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    masks = np.ones((1, SIZE, SIZE), bool)
    for got, want in zip(hf_outputs(loaded, images, masks), hf_outputs(model, images, masks),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    processor = DetrImageProcessor.from_pretrained(tmp_path / "out")
    assert processor.image_mean == pytest.approx(MEAN) and processor.size == {
        "shortest_edge": SIZE, "longest_edge": SIZE}


def saved_name(name: str) -> str:
    """A state dict entry's name in the checkpoints `save_pretrained` writes (transformers'
    DetrModel conversion mapping, reversed)."""
    for new, old in (("model.backbone.model.", "model.backbone.conv_encoder.model."),
                     (".o_proj.", ".out_proj."), (".mlp.fc", ".fc")):
        name = name.replace(new, old)
    return name


def meta_state(config: DetrConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of a Hugging Face model's state as saved, built without allocating it."""
    with torch.device("meta"):
        model = DetrForObjectDetection(config)
    return {saved_name(name): tuple(t.shape) for name, t in model.state_dict().items()
            if not name.endswith("num_batches_tracked")}


def to_timm(name: str) -> str:
    """transformers' backbone names -> timm's, as the published checkpoints name them."""
    for pattern, replacement in (
            (r"embedder\.embedder\.convolution", "conv1"),
            (r"embedder\.embedder\.normalization", "bn1"),
            (r"encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.convolution",
             lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}"),
            (r"encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.normalization",
             lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}"),
            (r"encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution",
             lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0"),
            (r"encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization",
             lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1")):
        name = re.sub(pattern, replacement, name)
    return name


@pytest.mark.parametrize("depths,values", [([3, 4, 6, 3], 41_631_008),
                                           ([3, 4, 23, 3], 60_675_360)])
def test_full_size_models(imported, depths, values, tmp_path):
    """DETR-R50 and R101 (COCO's 91 classes): Hugging Face's parameters and BatchNorm
    buffers, each tensor mapped with its shape, in both backbone layouts."""
    root, model = imported
    assert {saved_name(n) for n in model.state_dict()} == load_file(
        root / "hf" / "model.safetensors").keys()
    config = DetrConfig(backbone_config=ResNetConfig(depths=depths, out_features=["stage4"]),
                        id2label=dict(enumerate(CLASS_NAMES)))
    config.save_pretrained(tmp_path / "hf")
    jax_config, _ = convert.import_config(str(tmp_path / "hf"), "detr")
    assert "class_names" not in jax_config.data  # COCO's own.
    shapes = convert.abstract_params(jax_config)
    state = meta_state(config)
    assert sum(int(np.prod(s)) for s in shapes.values()) == sum(
        int(np.prod(s)) for s in state.values()) == values
    zeros = {name: np.broadcast_to(np.float32(0), shape) for name, shape in state.items()}
    rules = detr_weights.rules(jax_config)
    assert convert.params_from_tensors(rules, zeros, shapes).keys() == shapes.keys()

    published = {"model_type": "detr", "use_timm_backbone": True, "backbone_config": None,
                 "backbone": f"resnet{50 if depths[2] == 6 else 101}", "dilation": False,
                 "id2label": {str(i): n for i, n in enumerate(CLASS_NAMES)}}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(published))
    timm_config, _ = convert.import_config(str(tmp_path / "hf"), "detr")
    assert timm_config.model.to_dict() == jax_config.model.to_dict()
    timm = {to_timm(name): array for name, array in zeros.items()}
    timm.update({name.replace(".weight", ".num_batches_tracked"): np.zeros((), np.int64)
                 for name in timm if ".downsample.1.weight" in name})
    assert len(timm) > len(zeros) and timm.keys() != zeros.keys()
    renamed = detr_weights.rename(timm)
    params = convert.params_from_tensors(rules, renamed, shapes, detr_weights.IGNORED)
    assert params.keys() == shapes.keys()


@pytest.mark.parametrize("change,words", [
    ("missing", ["lacks 1 tensor", "model.decoder.layers.1.fc2.bias"]),
    ("extra", ["no place for", "model.encoder.layers.0.extra.weight"]),
    ("shape", ["model.input_projection.weight", "shape"]),
    ("learned", ["position_embedding_type='learned' is not supported"]),
])
def test_bad_checkpoints_name_the_tensor(imported, tmp_path, change, words):
    root, _ = imported
    tensors = load_file(root / "hf" / "model.safetensors")
    config = json.loads((root / "hf" / "config.json").read_text())
    if change == "missing":
        del tensors["model.decoder.layers.1.fc2.bias"]
    elif change == "extra":
        tensors["model.encoder.layers.0.extra.weight"] = np.zeros(3, np.float32)
    elif change == "shape":
        tensors["model.input_projection.weight"] = np.zeros((32, 63, 1, 1), np.float32)
    else:
        config["position_embedding_type"] = change
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    save_file(tensors, tmp_path / "hf" / "model.safetensors")
    with pytest.raises(UserError) as error:
        convert.import_weights(str(tmp_path / "hf"), "detr", str(tmp_path / "run"),
                               dry_run=True, log=lambda _: None)
    assert all(word in str(error.value) for word in words), error.value


@pytest.mark.slow
def test_detect_on_the_import(imported, tmp_path, capsys):
    """`jaxformer detect` without COCO on disk: the best query of Hugging Face's model on
    the same picture, named by `id2label`, its box in the picture's pixels."""
    from PIL import Image

    root, model = imported
    pixels = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    assert cli.main(["detect", f"--workdir={root / 'run'}", f"--image={tmp_path / 'in.png'}",
                     f"--out={tmp_path / 'out.png'}", "--threshold=0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == model.config.num_queries and (tmp_path / "out.png").exists()

    images = ((pixels / 255 - np.array(MEAN)) / np.array(STD))[None].astype(np.float32)
    logits, boxes = hf_outputs(model, images, np.ones((1, SIZE, SIZE), bool))
    probs = torch.softmax(torch.from_numpy(logits[0]), -1).numpy()[:, :-1]
    best = int(probs.max(-1).argmax())
    name, score, box = lines[0].split("\t")
    assert name == NAMES[int(probs[best].argmax())]
    assert float(score) == pytest.approx(float(probs[best].max()), abs=2e-3)
    cx, cy, w, h = boxes[0, best] * SIZE
    np.testing.assert_allclose([float(v) for v in box.split()],
                               np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0,
                                       SIZE), atol=0.1)


@pytest.mark.slow
def test_fine_tune_the_import_on_other_classes(imported, tmp_path):
    """`configs/detr/composed.py:detr=DIR`: the import's model and normalisation, every
    parameter loaded but the class head (new, for the canvases' 20 classes + no object)."""
    from jaxformer import config as config_lib
    from jaxformer import registry
    from jaxformer.train import trainer, transfer
    from jaxformer.train.checkpoint import Checkpointer
    from tests.helpers import ROOT

    source = str(imported[0] / "run")
    config = config_lib.load_config(f"{ROOT}/configs/detr/composed.py:runlocal,detr={source}")
    assert config.model.num_queries == 6 and tuple(config.data.mean) == tuple(MEAN)
    spec = registry.lookup("data", config.data.name).spec(config.data)
    task = registry.lookup("tasks", config.task.name).build(config, spec)
    loaded = transfer.init_from(config, task, jax.eval_shape(task.init, jax.random.key(0)))
    params = transfer.flat_paths(Checkpointer.read_params(source)[0])
    assert loaded.keys() == {p for p in params if not p.startswith("class_embed/")}
    for path, value in loaded.items():
        np.testing.assert_array_equal(value, params[path], err_msg=path)
    config_lib.apply_overrides(config, ["train.num_steps=1"])
    config.evals = {}
    trainer.train(config, str(tmp_path / "fine_tuned"))
    tuned = load_run(str(tmp_path / "fine_tuned")).params
    assert tuned["class_embed"]["kernel"].shape == (32, len(spec.class_names) + 1)
    np.testing.assert_array_equal(  # Frozen by DETR's rule.
        tuned["backbone"]["conv1"]["kernel"], params["backbone/conv1/kernel"])
