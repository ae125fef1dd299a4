"""BERT weights in and out: a random `transformers` BertForPreTraining (with Google's special
token ids) imported through the command line computes the same masked-LM and next-sentence
logits, exports back to the same model, and its tokenizer, `fill-mask` and the fine-tuning
configs work on the imported workdir."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxformer import cli, registry
from jaxformer import config as config_lib
from jaxformer.data import wordpiece
from jaxformer.errors import UserError
from jaxformer.models import bert as bert_model
from jaxformer.train import transfer
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.weights import bert, convert, hf_files

WORDS = ("the king queen of an and is was to in it he she his her my lord god said unto "
         "thou thy thee shall not be with for this that house son people day").split()
# As Google's vocabularies: [PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
CHARS = "abcdefghijklmnopqrstuvwxyzé"
VOCAB = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + list(CHARS + ".,;:!?'\"-()") + [f"##{c}" for c in CHARS] + WORDS
         + ["##ed", "##ing", "##eth", "##est", "##ly", "##er", "caf", "Lord"])
SMALL = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
TEXTS = ["The King said unto her, Thou shalt not!", "the Lord's house [SEP] café CAFÉ",
         "Queenly sons walketh; zzzzqx € 42 (people)", "  tabs\tand\nnewlines  "]
SEQ = 16


def _reference(seed: int = 0, **overrides) -> transformers.BertForPreTraining:
    """A BertForPreTraining of `SMALL` (+ `overrides`) with every parameter random, LayerNorm
    scales around 1."""
    torch.manual_seed(seed)
    model = transformers.BertForPreTraining(transformers.BertConfig(**{**SMALL, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.2)
    return model.eval()


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    """Ids `[3, SEQ]` of two segments, two rows padded with [PAD] 0, and their segment ids."""
    rng = np.random.default_rng(0)
    ids, segments = np.zeros((3, SEQ), np.int64), np.zeros((3, SEQ), np.int64)
    for row, (a, b) in enumerate([(5, 4), (3, 2), (7, 6)]):
        first = [101, *rng.integers(104, len(VOCAB), a), 102]
        second = [*rng.integers(104, len(VOCAB), b), 102]
        ids[row, :a + b + 3] = first + second
        segments[row, len(first):a + b + 3] = 1
    return ids, segments


def _torch_logits(model, ids, segments) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
                    attention_mask=torch.from_numpy((ids != 0).astype(np.int64)))
    return out.prediction_logits.numpy(), out.seq_relationship_logits.numpy()


def _our_logits(config, params, ids, segments) -> tuple[np.ndarray, np.ndarray]:
    model = bert_model.build(config.model, vocab_size=config.data.vocab_size)
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    mlm, nsp = model.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                           jnp.asarray(segments, jnp.int32), jnp.asarray(positions, jnp.int32))
    return np.asarray(mlm), np.asarray(nsp)


def _save(model, directory) -> str:
    model.save_pretrained(directory)
    transformers.BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)}).save_pretrained(
        directory)
    return str(directory)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The reference model, its directory and the workdir `jaxformer import-weights` made."""
    root = tmp_path_factory.mktemp("bert")
    model = _reference()
    hf_dir = _save(model, root / "hf")
    workdir = str(root / "workdir")
    assert cli.main(["import-weights", f"--from={hf_dir}", "--family=bert",
                     f"--workdir={workdir}"]) == 0
    return types.SimpleNamespace(model=model, hf_dir=hf_dir, workdir=workdir, root=root)


@pytest.mark.slow
def test_logits_match_transformers_with_padding_and_two_segments(imported):
    config = config_lib.read_workdir_config(imported.workdir)
    params, step = Checkpointer.read_params(imported.workdir, -1)
    assert step == 0 and config.model.variant == "" and config.data.vocab_size == len(VOCAB)
    ids, segments = _inputs()
    mlm, nsp = _our_logits(config, params, ids, segments)
    ref_mlm, ref_nsp = _torch_logits(imported.model, ids, segments)
    assert np.abs(mlm - ref_mlm).max() < 1e-4 and np.abs(nsp - ref_nsp).max() < 1e-4
    assert np.abs(ref_mlm).max() > 1 and np.abs(ref_nsp).max() > 0.1  # Not a trivial output.


@pytest.mark.parametrize("hidden_act, eps", [("gelu_new", 1e-3), ("relu", 1e-5)])
def test_activation_and_layer_norm_epsilon_follow_the_checkpoint(tmp_path, hidden_act, eps):
    model = _reference(1, hidden_act=hidden_act, layer_norm_eps=eps, num_hidden_layers=1)
    hf_dir = _save(model, tmp_path)
    config, _ = convert.import_config(hf_dir, "bert")
    params = convert.params_from_tensors(bert.rules(config), hf_files.read_tensors(hf_dir),
                                         convert.abstract_params(config), bert.IGNORED)
    ids, segments = _inputs()
    mlm, nsp = _our_logits(config, convert._unflatten(params), ids, segments)
    ref_mlm, ref_nsp = _torch_logits(model, ids, segments)
    assert np.abs(mlm - ref_mlm).max() < 1e-4 and np.abs(nsp - ref_nsp).max() < 1e-4


def test_export_loads_in_transformers_with_the_same_outputs(imported):
    out = str(imported.root / "exported")
    assert cli.main(["export-weights", f"--workdir={imported.workdir}", f"--to={out}"]) == 0
    model, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids, segments = _inputs()
    for ours, reference in zip(_torch_logits(model.eval(), ids, segments),
                               _torch_logits(imported.model, ids, segments), strict=True):
        np.testing.assert_array_equal(ours, reference)
    original = transformers.BertTokenizerFast.from_pretrained(imported.hf_dir)
    exported = transformers.BertTokenizerFast.from_pretrained(out)
    for text in TEXTS:
        assert exported(text).input_ids == original(text).input_ids
    with open(os.path.join(out, "vocab.txt"), encoding="utf-8") as f:
        assert f.read().splitlines() == VOCAB


def test_tokenizer_ids_equal_transformers(imported):
    ours = wordpiece.WordPiece.load(wordpiece.saved_vocabulary(imported.workdir))
    theirs = transformers.BertTokenizerFast.from_pretrained(imported.hf_dir)
    assert ours.special_ids == (0, 100, 101, 102, 103)
    for text in TEXTS:
        assert ours.encode(text) == theirs(text, add_special_tokens=False).input_ids, text
    assert ours.decode(ours.encode(TEXTS[0])) == theirs.decode(
        theirs(TEXTS[0], add_special_tokens=False).input_ids)


def test_vocab_txt_alone_with_a_cased_tokenizer_config(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    assets = tmp_path / "assets"
    assets.mkdir()
    assert bert.import_tokenizer(str(tmp_path), str(assets)) == ["vocab.txt",
                                                                  "tokenizer_config.json"]
    ours = wordpiece.WordPiece.load(assets / wordpiece.ASSET_NAME)
    theirs = transformers.BertTokenizer.from_pretrained(str(tmp_path))
    assert not theirs.do_lower_case
    for text in TEXTS:
        assert ours.encode(text) == theirs(text, add_special_tokens=False).input_ids, text
    assert ours.encode("Lord") != ours.encode("lord")


@pytest.mark.slow
def test_fill_mask_on_the_imported_workdir(imported, capsys):
    text = "the king [MASK] unto her"
    assert cli.main(["fill-mask", f"--workdir={imported.workdir}", f"--text={text}",
                     "--top_k=3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(imported.hf_dir)
    ids = tokenizer(text, return_tensors="np").input_ids
    with torch.no_grad():
        logits = imported.model(input_ids=torch.from_numpy(ids)).prediction_logits[0].numpy()
    best = int(logits[int(np.flatnonzero(ids[0] == 103)[0])].argmax())
    assert printed[0].startswith(f"[MASK] 1: {VOCAB[best]} ")
    assert printed[1] == tokenizer.decode([best if i == 103 else i for i in ids[0][1:-1]])


def test_fine_tuning_config_starts_from_the_imported_workdir(imported, tmp_path):
    """What `jaxformer train --config=configs/bert/tweet_sentiment.py:init_from=DIR` loads: the
    model and vocabulary of the imported run, its encoder and pooler, its tokenizer."""
    config = config_lib.load_config(
        f"configs/bert/tweet_sentiment.py:runlocal,init_from={imported.workdir}")
    assert (config.model.d_model, config.model.num_layers, config.data.vocab_size) == (
        SMALL["hidden_size"], SMALL["num_hidden_layers"], len(VOCAB))
    spec = registry.lookup("data", config.data.name).spec(config.data)
    task = registry.lookup("tasks", config.task.name).build(config, spec)
    loaded = transfer.init_from(config, task, jax.eval_shape(task.init, jax.random.key(0)))
    source, _ = Checkpointer.read_params(imported.workdir, -1)
    expected = {k: v for k, v in transfer.flat_paths(source).items() if k.startswith("encoder")}
    assert loaded.keys() == expected.keys()
    for path, value in expected.items():
        np.testing.assert_array_equal(loaded[path], value)
    tokenizer = wordpiece.for_workdir(str(tmp_path), list, config.data.vocab_size,
                                      source_workdir=config.data.tokenizer_workdir)
    assert tokenizer.special_ids == (0, 100, 101, 102, 103)


@pytest.mark.parametrize("size, hf_sizes, count", [
    ("base", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072), 110_106_428),
    ("large", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                   intermediate_size=4096), 336_226_108),
])
def test_full_size_parameter_counts(tmp_path, size, hf_sizes, count):
    hf_config = dict(model_type="bert", architectures=["BertForMaskedLM"], vocab_size=30522,
                     max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                     layer_norm_eps=1e-12, pad_token_id=0, **hf_sizes)
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    config, _ = convert.import_config(str(tmp_path), "bert")
    ours = sum(int(np.prod(s)) for s in convert.abstract_params(config).values())
    with torch.device("meta"):
        reference = transformers.BertForPreTraining(transformers.BertConfig(**hf_config))
    assert ours == sum(p.numel() for p in reference.parameters()) == count, size


def _mutated(imported, tmp_path, change) -> str:
    tensors = hf_files.read_tensors(imported.hf_dir)
    change(tensors)
    with open(os.path.join(imported.hf_dir, "config.json")) as f:
        hf_files.write(str(tmp_path), json.load(f), tensors)
    return str(tmp_path)


def _legacy(tensors):
    """Google's names: LayerNorm gamma/beta, the tied decoder stored, position ids."""
    for name in [n for n in tensors if n.endswith(("LayerNorm.weight", "LayerNorm.bias"))]:
        tensors[name.replace(".weight", ".gamma").replace(".bias", ".beta")] = tensors.pop(name)
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    tensors["bert.embeddings.position_ids"] = np.arange(64)[None]


def test_dry_run_reads_legacy_names_and_lists_the_mapping(imported, tmp_path):
    lines = []
    convert.import_weights(_mutated(imported, tmp_path, _legacy), "bert",
                           str(tmp_path / "none"), dry_run=True, log=lines.append)
    assert ("bert.encoder.layer.1.attention.self.query.weight, "
            "bert.encoder.layer.1.attention.self.key.weight, "
            "bert.encoder.layer.1.attention.self.value.weight  ->  "
            "encoder/transformer/block_1/attention/qkv/kernel  (concatenate, transpose)") in lines
    assert "nothing written" in lines[-1] and not os.path.exists(tmp_path / "none")


def _single_head(imported, tmp_path, head: str) -> tuple[str, torch.nn.Module]:
    """The reference's `BertModel` (no `bert.` prefix, the pooler, no head) or
    `BertForMaskedLM` (no pooler, no next-sentence head), saved to `tmp_path`."""
    if head == "none":
        model = imported.model.bert
    else:
        model = transformers.BertForMaskedLM(imported.model.config)
        model.load_state_dict(imported.model.state_dict(), strict=False)
    return _save(model.eval(), tmp_path / "hf"), model


@pytest.mark.slow
@pytest.mark.parametrize("head, new", [("none", "mlm_head, nsp_head"),
                                       ("masked_lm", "encoder/pooler, nsp_head")])
def test_a_checkpoint_without_heads_gets_new_ones(imported, tmp_path, head, new):
    hf_dir, model = _single_head(imported, tmp_path, head)
    lines = []
    convert.import_weights(hf_dir, "bert", str(tmp_path / "w"), log=lines.append)
    assert lines[-1].endswith(f"initialised as the model does): {new}")
    config = config_lib.read_workdir_config(str(tmp_path / "w"))
    ours = transfer.flat_paths(Checkpointer.read_params(str(tmp_path / "w"))[0])
    full = transfer.flat_paths(Checkpointer.read_params(imported.workdir)[0])
    parts = new.split(", ")
    fresh = convert.initial_params(config, [p for p in ours if convert.in_parts(p, parts)])
    assert fresh.keys() == {p for p in ours if p.startswith(tuple(parts))}
    for path, value in ours.items():  # What the checkpoint holds, or the model's init.
        np.testing.assert_array_equal(value, fresh[path] if path in fresh else full[path],
                                      err_msg=path)
    assert ours.keys() == full.keys()
    if head == "masked_lm":  # The masked-LM head works as transformers' BertForMaskedLM.
        ids, segments = _inputs()
        mlm, _ = _our_logits(config, Checkpointer.read_params(str(tmp_path / "w"))[0], ids,
                             segments)
        with torch.no_grad():
            reference = model(input_ids=torch.from_numpy(ids),
                              token_type_ids=torch.from_numpy(segments),
                              attention_mask=torch.from_numpy((ids != 0).astype(np.int64)))
        assert np.abs(mlm - reference.logits.numpy()).max() < 1e-4
    else:
        assert not np.array_equal(ours["nsp_head/kernel"], full["nsp_head/kernel"])
        # normal(0.02) truncated at two standard deviations: 0.88 x 0.02.
        assert np.std(ours["mlm_head/transform/kernel"]) == pytest.approx(0.0176, rel=0.1)


def _no_nsp_bias(tensors):
    del tensors["cls.seq_relationship.bias"]


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("bert.encoder.layer.1.output.dense.bias"),
     "lacks 1 tensor.*bert.encoder.layer.1.output.dense.bias"),
    (lambda t: t.update({"cls.predictions.extra": np.zeros(3, np.float32)}),
     "no place for: cls.predictions.extra"),
    (lambda t: t.update({"cls.seq_relationship.weight": np.zeros((3, 32), np.float32)}),
     r"cls.seq_relationship.weight of shape \[\(3, 32\)\] gives nsp_head/kernel"),
    (_no_nsp_bias, "lacks 1 tensor.*cls.seq_relationship.bias"),  # Half a head is no head.
])
def test_errors_name_the_tensor(imported, tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        convert.import_weights(_mutated(imported, tmp_path, change), "bert",
                               str(tmp_path / "none"), dry_run=True, log=lambda _: None)


def _import_head(imported, tmp_path, model):
    """`model` (a transformers BERT with a classifier head, or `qa_outputs`) with the
    reference's encoder and a random head, saved and imported: (its directory, the workdir,
    the workdir's config, its params, its task built from the data spec)."""
    model.bert.load_state_dict(imported.model.bert.state_dict(), strict=False)
    head = model.qa_outputs if hasattr(model, "qa_outputs") else model.classifier
    with torch.no_grad():
        head.weight.normal_(0.0, 0.5)
        head.bias.normal_(0.0, 0.5)
    hf_dir, workdir = _save(model, tmp_path / "hf"), str(tmp_path / "w")
    assert cli.main(["import-weights", f"--from={hf_dir}", "--family=bert",
                     f"--workdir={workdir}"]) == 0
    config = config_lib.read_workdir_config(workdir)
    spec = registry.lookup("data", config.data.name).spec(config.data)
    task = registry.lookup("tasks", config.task.name).build(config, spec)
    return hf_dir, workdir, config, Checkpointer.read_params(workdir)[0], task


def _head_logits(reference, ids, segments) -> np.ndarray:
    with torch.no_grad():
        return reference(input_ids=torch.from_numpy(ids),
                         token_type_ids=torch.from_numpy(segments),
                         attention_mask=torch.from_numpy((ids != 0).astype(np.int64))
                         ).logits.numpy()


def test_a_sequence_classifier_imports_as_a_classification_run_and_exports(imported,
                                                                            tmp_path):
    """A BertForSequenceClassification of three labels becomes a tweet-sentiment run that
    computes its logits, and exports back to the same model with the data's class names."""
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(**SMALL, num_labels=3)).eval()
    hf_dir, workdir, config, params, task = _import_head(imported, tmp_path, model)
    assert (config.task.name, config.data.name) == ("text_classification", "tweet_sentiment")
    ids, segments = _inputs()
    ours = np.asarray(task.model.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                                       jnp.asarray(segments, jnp.int32)))
    want = _head_logits(model, ids, segments)
    assert np.abs(ours - want).max() < 1e-4 and np.abs(want).max() > 0.1
    out = str(tmp_path / "exported")
    convert.export_weights(workdir, out, log=lambda _: None)
    exported = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    assert list(exported.config.id2label.values()) == list(task.class_names)
    np.testing.assert_allclose(_head_logits(exported, ids, segments), want, rtol=1e-6,
                               atol=1e-6)
    # A checkpoint of another number of classes than the data's is named.
    hf = json.loads(open(os.path.join(hf_dir, "config.json")).read())
    hf["id2label"] = {"0": "no", "1": "yes"}
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "config.json").write_text(json.dumps(hf))
    with pytest.raises(UserError, match="2 classes.*tweet_sentiment.*3"):
        convert.import_config(str(tmp_path / "two"), "bert")


TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_a_token_classifier_imports_as_a_tagging_run_and_exports(imported, tmp_path, capsys):
    """A BertForTokenClassification (no pooler) becomes a CoNLL-2003 run whose tags are its
    labels, computes its logits, tags text without any CoNLL data, and exports back to the
    same model."""
    model = transformers.BertForTokenClassification(transformers.BertConfig(
        **SMALL, num_labels=len(TAGS), id2label=dict(enumerate(TAGS)),
        label2id={t: i for i, t in enumerate(TAGS)})).eval()
    hf_dir, workdir, config, params, task = _import_head(imported, tmp_path, model)
    assert (config.task.name, config.data.name) == ("token_classification", "conll2003")
    assert list(config.data.tags) == TAGS and "pooler" not in params["encoder"]
    ids, segments = _inputs()
    ours = np.asarray(task.model.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                                       jnp.asarray(segments, jnp.int32)))
    want = _head_logits(model, ids, segments)
    real = ids != 0
    assert np.abs(ours - want)[real].max() < 1e-4 and np.abs(want).max() > 0.1
    out = str(tmp_path / "exported")
    convert.export_weights(workdir, out, log=lambda _: None)
    exported = transformers.BertForTokenClassification.from_pretrained(out).eval()
    assert list(exported.config.id2label.values()) == TAGS
    np.testing.assert_allclose(_head_logits(exported, ids, segments), want, rtol=1e-6,
                               atol=1e-6)

    # `tag` reads only the workdir (there is no CoNLL data here): each word's tag is the
    # argmax of transformers' logits at the word (one piece each).
    words = "the king said unto her".split()
    row = np.array([[101, *[VOCAB.index(w) for w in words], 102]])
    expected = [TAGS[i] for i in _head_logits(model, row, np.zeros_like(row))[0, 1:-1].argmax(-1)]
    capsys.readouterr()
    assert cli.main(["tag", f"--workdir={workdir}", f"--text={' '.join(words)}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t") for line in lines[:len(words)]] == [
        [w, t] for w, t in zip(words, expected, strict=True)]
    hf = json.loads(open(os.path.join(hf_dir, "config.json")).read())
    hf["id2label"] = {"0": "O", "1": "PERSON"}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps(hf))
    with pytest.raises(UserError, match="id2label: tag 'PERSON' is neither O nor"):
        convert.import_config(str(tmp_path / "bad"), "bert")


def test_full_size_token_classifier_parameter_count(tmp_path):
    """bert-base-cased's vocabulary with CoNLL-2003's nine tags (as dslim/bert-base-NER)."""
    hf_config = dict(model_type="bert", architectures=["BertForTokenClassification"],
                     vocab_size=28996, id2label={str(i): t for i, t in enumerate(
                         ("O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC",
                          "I-LOC"))})
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    config, _ = convert.import_config(str(tmp_path), "bert")
    ours = sum(int(np.prod(s)) for s in convert.abstract_params(config).values())
    with torch.device("meta"):
        reference = transformers.BertForTokenClassification(transformers.BertConfig(
            vocab_size=28996, num_labels=9))
    assert ours == sum(p.numel() for p in reference.parameters()) == 107_726_601


def _span_logits(reference, ids, segments) -> np.ndarray:
    """transformers' start and end logits stacked as ours: `[b, L, 2]`."""
    with torch.no_grad():
        out = reference(input_ids=torch.from_numpy(ids),
                        token_type_ids=torch.from_numpy(segments),
                        attention_mask=torch.from_numpy((ids != 0).astype(np.int64)))
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], axis=-1)


def test_a_question_answerer_imports_as_a_squad_run_and_exports(imported, tmp_path):
    """A BertForQuestionAnswering (no pooler) becomes a SQuAD v1.1 run (its windows cut to the
    checkpoint's 64 positions) whose first and last logits are transformers' start and end
    logits, answers as transformers' best span does, and exports back to the same model."""
    model = transformers.BertForQuestionAnswering(transformers.BertConfig(**SMALL)).eval()
    hf_dir, workdir, config, params, task = _import_head(imported, tmp_path, model)
    assert (config.task.name, config.data.name, config.data.version) == (
        "question_answering", "squad", "1.1")
    assert not config.task.no_answer and "pooler" not in params["encoder"]
    assert (config.data.seq_length, config.data.max_query_length, config.data.doc_stride) == (
        64, 10, 21)  # 384, 64 and 128 cut in proportion.
    ids, segments = _inputs()
    ours = np.asarray(task.model.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                                       jnp.asarray(segments, jnp.int32)))
    want = _span_logits(model, ids, segments)
    real = ids != 0
    assert np.abs(ours - want)[real].max() < 1e-4 and np.abs(want).max() > 0.1
    out = str(tmp_path / "exported")
    convert.export_weights(workdir, out, log=lambda _: None)
    exported, info = transformers.BertForQuestionAnswering.from_pretrained(
        out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    np.testing.assert_allclose(_span_logits(exported.eval(), ids, segments), want, rtol=1e-6,
                               atol=1e-6)

    # `answer` reads only the workdir: transformers' best span of the context (first <= last,
    # at most max_answer_length tokens) at the argmax of start + end logits.
    from jaxformer.inference.answer import answer
    from jaxformer.inference.workdir import load_run, vocabulary_spec

    question = "who said it to the king"
    context = ("the queen said unto the king: thou shalt not be in this house, for the "
               "people of god shall be with thee and thy son")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(hf_dir)
    encoded = tokenizer(question, context, return_offsets_mapping=True, return_tensors="np")
    logits = _span_logits(model, encoded.input_ids, encoded.token_type_ids)[0]
    in_context = np.array([s == 1 for s in encoded.sequence_ids(0)])
    in_context[-1] = False  # The last [SEP].
    scores = logits[:, 0, None] + logits[None, :, 1]
    offset = np.arange(len(scores))[None, :] - np.arange(len(scores))[:, None]
    valid = in_context[:, None] & in_context[None, :] & (offset >= 0) & (
        offset < task.max_answer_length)
    first, last = np.unravel_index(np.where(valid, scores, -np.inf).argmax(), scores.shape)
    offsets = encoded.offset_mapping[0]
    found = answer(load_run(workdir, data=vocabulary_spec), question, context)
    assert (found.start, found.end) == (offsets[first][0], offsets[last][1])
    assert found.text == context[found.start:found.end] and found.text
    assert found.score == pytest.approx(scores[first, last], abs=1e-4)


def test_full_size_question_answerer_parameter_count(tmp_path):
    """bert-base-uncased with a span head (as a SQuAD fine-tuned BertForQuestionAnswering)."""
    hf_config = dict(model_type="bert", architectures=["BertForQuestionAnswering"])
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    config, _ = convert.import_config(str(tmp_path), "bert")
    assert config.task.name == "question_answering" and config.data.seq_length == 384
    ours = sum(int(np.prod(s)) for s in convert.abstract_params(config).values())
    with torch.device("meta"):
        reference = transformers.BertForQuestionAnswering(transformers.BertConfig())
    assert ours == sum(p.numel() for p in reference.parameters()) == 108_893_186
