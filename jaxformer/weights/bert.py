"""BERT (`model_type` "bert"): Hugging Face `BertForPreTraining`,
`BertForSequenceClassification`, `BertForTokenClassification` and `BertForQuestionAnswering`
<-> `jaxformer.models.bert`.

An import makes a pretraining run: the encoder, the pooler, the masked-LM head and the
next-sentence head (`BertForPreTraining`; Google's checkpoints, e.g. bert-base-uncased, hold
all of them whatever their `architectures` says). A checkpoint without the pooler or a head
(`BertModel`, `BertForMaskedLM`) gets those parts new, initialised as the model does, for
fine-tuning (`init_from`); `fill-mask` needs the masked-LM head. A
`BertForSequenceClassification` makes a text classification run (configs/bert/
tweet_sentiment.py, or `--config` with data of the checkpoint's number of classes), and a
text classification run exports as one, its data's class names as the labels. A
`BertForTokenClassification` (no pooler) makes a tagging run (configs/bert/conll2003.py) whose
tags are the checkpoint's labels (`id2label`, which must be IOB or IOBES tag names, e.g.
B-PER), and a tagging run exports as one. A `BertForQuestionAnswering` (no pooler; its
`qa_outputs` is the span head's `classifier`, first and last token) makes a SQuAD v1.1 run
(configs/bert/squad.py; sequences, questions and the window stride cut in proportion to a
shorter `max_position_embeddings`), and a question answering run exports as one. A checkpoint
does not say whether it was trained on SQuAD 2.0: for one that was, give
`--config=configs/bert/squad.py:version=2.0` (v2.0's data and recipe, `task.no_answer`), or
`--config.task.no_answer=true` alone (answering nothing allowed, v1.1's data). The masked-LM
decoder is the token embedding (tied); its copies in a checkpoint
(`cls.predictions.decoder.*`) are ignored, as are the position and token type buffers.
Older names are read too: LayerNorm `gamma`/`beta`, and a `BertModel`'s tensors without the
`bert.` prefix.

The vocabulary (`tokenizer.json`, or `vocab.txt` alone) becomes the workdir's
`assets/wordpiece.json`, with BERT's text pipeline and the casing options of
`tokenizer_config.json` (`do_lower_case`, `strip_accents`, `tokenize_chinese_chars`), as
`transformers`' `BertTokenizer` builds it. An export writes `vocab.txt`, `tokenizer.json` and
`tokenizer_config.json`.
"""

from __future__ import annotations

import json
import os
import re

import ml_collections
import numpy as np

from jaxformer.data.token_classification_pipeline import TagScheme
from jaxformer.errors import UserError
from jaxformer.weights import data_spec, hf_files
from jaxformer.weights import rules as maps
from jaxformer.weights.rules import Rule

MODEL_TYPES = ("bert",)
MODEL_NAMES = ("bert",)
IGNORED = (
    r"bert\.embeddings\.position_ids",
    r"bert\.embeddings\.token_type_ids",
    r"cls\.predictions\.decoder\.weight",  # The token embedding (tied).
    r"cls\.predictions\.decoder\.bias",  # `cls.predictions.bias` (tied).
)
# Parts a base model or a single-head model lacks: parameter prefix -> tensor name prefix(es);
# a question answerer's classifier is its `qa_outputs`.
OPTIONAL = {"encoder/pooler": "bert.pooler.", "mlm_head": "cls.predictions.",
            "nsp_head": "cls.seq_relationship.", "classifier": ("classifier.", "qa_outputs.")}
PRETRAINING, CLASSIFIER = "BertForPreTraining", "BertForSequenceClassification"
TAGGER, QUESTION_ANSWERING = "BertForTokenClassification", "BertForQuestionAnswering"
# The jaxformer task of each exported architecture.
TASKS = {"bert_pretraining": PRETRAINING, "text_classification": CLASSIFIER,
         "token_classification": TAGGER, "question_answering": QUESTION_ANSWERING}
# `hidden_act` -> `model.activation`.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "relu": "relu"}
# BertConfig's defaults (those of bert-base-uncased), for keys a config.json leaves out.
DEFAULTS = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                attention_probs_dropout_prob=0.1, max_position_embeddings=512,
                type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
VOCAB_TXT = "vocab.txt"


def _architecture(hf_config: dict) -> str:
    """The checkpoint's head: `CLASSIFIER`, `TAGGER`, `QUESTION_ANSWERING` or (any other)
    `PRETRAINING`."""
    named = hf_config.get("architectures") or ()
    return next((a for a in (CLASSIFIER, TAGGER, QUESTION_ANSWERING) if a in named),
                PRETRAINING)


def base_config(hf_config: dict) -> str:
    """A classifier's is the tweet-sentiment fine-tuning config (its three classes; `--config`
    names another), a tagger's the CoNLL-2003 one (with the checkpoint's tags), a question
    answerer's SQuAD v1.1, every other checkpoint's the pretraining config."""
    return {CLASSIFIER: "configs/bert/tweet_sentiment.py", TAGGER: "configs/bert/conll2003.py",
            QUESTION_ANSWERING: "configs/bert/squad.py",
            PRETRAINING: "configs/bert/books_pretraining.py"}[_architecture(hf_config)]


def _labels(hf_config: dict) -> list[str] | None:
    """The checkpoint's label names by id (None: it has none)."""
    id2label = hf_config.get("id2label") or {}
    try:
        return [str(id2label[str(i)]) for i in range(len(id2label))] or None
    except KeyError:
        raise ValueError(f"id2label has ids {sorted(id2label)}, not 0..{len(id2label) - 1}"
                         ) from None


def _get(hf_config: dict, key: str):
    return hf_config.get(key, DEFAULTS[key])


def configure(config: ml_collections.ConfigDict, hf_config: dict) -> None:
    """The model (size, dropout, LayerNorm epsilon, activation) and vocabulary size of the
    checkpoint; sequences are cut to `max_position_embeddings` at most."""
    position = hf_config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise ValueError(f"position_embedding_type {position!r} is not supported (absolute "
                         "positions only)")
    if hf_config.get("is_decoder") or hf_config.get("add_cross_attention"):
        raise ValueError("a BERT decoder (is_decoder, add_cross_attention) is not supported")
    if not hf_config.get("tie_word_embeddings", True):
        raise ValueError("tie_word_embeddings is false: jaxformer's masked-LM decoder is the "
                         "token embedding")
    if _get(hf_config, "pad_token_id") not in (0, None):
        raise ValueError(f"pad_token_id is {hf_config['pad_token_id']}; jaxformer's BERT "
                         "masks id 0")
    act = _get(hf_config, "hidden_act")
    if act not in ACTIVATIONS:
        raise ValueError(f"hidden_act {act!r} is not supported; supported: "
                         f"{', '.join(ACTIVATIONS)}")
    max_position = _get(hf_config, "max_position_embeddings")
    seq_length = config.data.seq_length
    config.model.update(
        name="bert", variant="", num_layers=_get(hf_config, "num_hidden_layers"),
        d_model=_get(hf_config, "hidden_size"), num_heads=_get(hf_config, "num_attention_heads"),
        mlp_dim=_get(hf_config, "intermediate_size"), max_position=max_position,
        type_vocab=_get(hf_config, "type_vocab_size"),
        dropout_rate=_get(hf_config, "hidden_dropout_prob"),
        attention_dropout_rate=_get(hf_config, "attention_probs_dropout_prob"),
        layer_norm_epsilon=_get(hf_config, "layer_norm_eps"), activation=ACTIVATIONS[act],
        causal=False, scan_layers=False)
    config.data.update(vocab_size=_get(hf_config, "vocab_size"), tokenizer_workdir="",
                       seq_length=min(config.data.seq_length, max_position))
    if config.task.name == "question_answering" and config.data.seq_length < seq_length:
        for key in ("max_query_length", "doc_stride"):  # In proportion to the shorter windows.
            config.data[key] = max(1, config.data[key] * config.data.seq_length // seq_length)
    if config.task.name == "bert_pretraining":
        config.data.max_predictions = min(config.data.max_predictions, config.data.seq_length)
    elif _architecture(hf_config) == TAGGER:
        tags = _labels(hf_config)
        if tags is None:
            raise ValueError("a BertForTokenClassification needs id2label: its tag names")
        try:
            TagScheme.of(tags)
        except ValueError as e:
            raise ValueError(f"id2label: {e}; the tags must be IOB or IOBES (O, B-X, I-X, "
                             "...)") from None
        config.data.tags = tuple(tags)
    elif _architecture(hf_config) == CLASSIFIER:
        labels = len(hf_config.get("id2label") or {}) or hf_config.get("num_labels", 2)
        classes = len(data_spec(config).class_names)
        if labels != classes:
            raise ValueError(f"the checkpoint has {labels} classes, the data of the config "
                             f"({config.data.name}) {classes}: give --config=FILE whose data "
                             f"has {labels} classes")


def _check_task(config: ml_collections.ConfigDict) -> str:
    """The architecture of `config`'s task (`TASKS`); another task is an error."""
    if config.task.name not in TASKS:
        raise UserError(f"task {config.task.name!r}: BERT runs of the tasks "
                        f"{', '.join(TASKS)} map to Hugging Face ({', '.join(TASKS.values())})")
    return TASKS[config.task.name]


def hf_config(config: ml_collections.ConfigDict) -> dict:
    """The `config.json` of a `BertForPreTraining` (a pretraining run), a
    `BertForSequenceClassification` (a text classification run, with the data's classes),
    a `BertForTokenClassification` (a tagging run, with its tags) or a
    `BertForQuestionAnswering` (a question answering run)."""
    from jaxformer.models import bert

    model = config.model
    architecture = _check_task(config)
    if model.get("causal", False):
        raise ValueError("a left-to-right BERT (model.causal) has no Hugging Face counterpart")
    sizes = bert.sizes(model)
    activation = model.get("activation", "gelu")
    hidden_act = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}[activation]
    classes = {}
    if architecture in (CLASSIFIER, TAGGER):
        names = list(data_spec(config).class_names)
        if len(set(names)) != len(names):
            names = [f"LABEL_{i}" for i in range(len(names))]
        classes = dict(id2label={str(i): n for i, n in enumerate(names)},
                       label2id={n: i for i, n in enumerate(names)})
        if architecture == CLASSIFIER:
            classes["problem_type"] = "single_label_classification"
    return dict(
        architectures=[architecture], model_type="bert", **classes,
        vocab_size=int(config.data.vocab_size), hidden_size=sizes["d_model"],
        num_hidden_layers=sizes["num_layers"], num_attention_heads=sizes["num_heads"],
        intermediate_size=sizes["mlp_dim"], hidden_act=hidden_act,
        hidden_dropout_prob=model.get("dropout_rate", 0.1),
        attention_probs_dropout_prob=model.get("attention_dropout_rate", 0.1),
        max_position_embeddings=model.get("max_position", 512),
        type_vocab_size=model.get("type_vocab", 2), initializer_range=0.02,
        layer_norm_eps=model.get("layer_norm_epsilon", bert.LAYER_NORM_EPSILON), pad_token_id=0,
        position_embedding_type="absolute", tie_word_embeddings=True, dtype="float32")


def configure_from_dir(config: ml_collections.ConfigDict, hf_dir: str) -> None:
    """Nothing beyond config.json is read for this family."""
    del config, hf_dir


def export_params(workdir: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters as they are: the export's layout is the model's."""
    del workdir
    return params


def rules(config: ml_collections.ConfigDict) -> list[Rule]:
    """The tensors of `BertForPreTraining`, `BertForSequenceClassification`,
    `BertForTokenClassification` or `BertForQuestionAnswering` (by the task) -> the model's
    parameters."""
    architecture = _check_task(config)
    from jaxformer.models import bert

    mapping = [
        maps.embedding("bert.embeddings.word_embeddings", "encoder/token_embedding"),
        maps.embedding("bert.embeddings.position_embeddings", "encoder/position_embedding"),
        maps.embedding("bert.embeddings.token_type_embeddings", "encoder/segment_embedding"),
        *maps.layer_norm("bert.embeddings.LayerNorm", "encoder/embedding_norm"),
    ]
    for i in range(bert.sizes(config.model)["num_layers"]):
        hf, block = f"bert.encoder.layer.{i}", f"encoder/transformer/block_{i}"
        mapping += [
            *maps.fused_linear([f"{hf}.attention.self.{n}" for n in ("query", "key", "value")],
                            f"{block}/attention/qkv"),
            *maps.linear(f"{hf}.attention.output.dense", f"{block}/attention/out"),
            *maps.layer_norm(f"{hf}.attention.output.LayerNorm", f"{block}/attention_norm"),
            *maps.linear(f"{hf}.intermediate.dense", f"{block}/mlp/fc"),
            *maps.linear(f"{hf}.output.dense", f"{block}/mlp/proj"),
            *maps.layer_norm(f"{hf}.output.LayerNorm", f"{block}/mlp_norm"),
        ]
    if architecture == TAGGER:
        return mapping + maps.linear("classifier", "classifier")
    if architecture == QUESTION_ANSWERING:
        return mapping + maps.linear("qa_outputs", "classifier")
    mapping += maps.linear("bert.pooler.dense", "encoder/pooler")
    if architecture == CLASSIFIER:
        return mapping + maps.linear("classifier", "classifier")
    return mapping + [
        *maps.linear("cls.predictions.transform.dense", "mlm_head/transform"),
        *maps.layer_norm("cls.predictions.transform.LayerNorm", "mlm_head/norm"),
        maps.copy("cls.predictions.bias", "mlm_head/output_bias"),
        *maps.linear("cls.seq_relationship", "nsp_head"),
    ]


_LEGACY_NORM = re.compile(r"(LayerNorm)\.(gamma|beta)$")
_BARE_PREFIXES = ("embeddings.", "encoder.", "pooler.")


def rename(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Older tensor names -> current ones: LayerNorm `gamma`/`beta` -> `weight`/`bias`, and
    a `BertModel`'s bare names (`embeddings.*`) -> `bert.embeddings.*`."""
    bare = not any(name.startswith("bert.") for name in tensors)
    renamed = {}
    for name, array in tensors.items():
        new = _LEGACY_NORM.sub(lambda m: f"{m[1]}.{'weight' if m[2] == 'gamma' else 'bias'}",
                               name)
        if bare and new.startswith(_BARE_PREFIXES):
            new = "bert." + new
        if new in renamed:
            raise UserError(f"the checkpoint holds both {name} and {new}")
        renamed[new] = array
    return renamed


# --- Tokenizer -----------------------------------------------------------------------------

def _vocabulary(hf_dir: str) -> tuple[list[str], dict, list[str]]:
    """The tokens by id, the options of the tokenizer's normaliser (if it has BERT's) and the
    files read."""
    json_path, txt_path = (os.path.join(hf_dir, n) for n in (TOKENIZER_JSON, VOCAB_TXT))
    if os.path.exists(json_path):
        tokenizer = hf_files.read_json(json_path)
        model = tokenizer.get("model") or {}
        if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            raise UserError(f"{json_path} is not a WordPiece tokenizer (model type "
                            f"{model.get('type')!r})")
        vocab = dict(model["vocab"])
        for added in tokenizer.get("added_tokens") or ():
            vocab.setdefault(added["content"], added["id"])
        normalizer = tokenizer.get("normalizer") or {}
        options = normalizer if normalizer.get("type") == "BertNormalizer" else {}
        files = [TOKENIZER_JSON]
    elif os.path.exists(txt_path):
        try:
            with open(txt_path, encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read {txt_path}: {e}") from None
        vocab = {token: i for i, token in enumerate(lines)}  # The last of a repeated token.
        options, files = {}, [VOCAB_TXT]
    else:
        raise UserError(f"{hf_dir} has no {TOKENIZER_JSON} or {VOCAB_TXT}: BERT's inputs are "
                        "ids of its vocabulary; add the checkpoint's tokenizer files")
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise UserError(f"{files[0]}: the vocabulary ids are not 0..{len(vocab) - 1} (a token "
                        "given twice?)")
    return tokens, options, files


def import_tokenizer(hf_dir: str, assets_dir: str) -> list[str]:
    """The checkpoint's vocabulary as `assets/wordpiece.json` (see the module docstring)."""
    from jaxformer.data import wordpiece

    tokens, options, files = _vocabulary(hf_dir)
    config_path = os.path.join(hf_dir, TOKENIZER_CONFIG)
    if os.path.exists(config_path):
        options = {**options, **hf_files.read_json(config_path)}
        files.append(TOKENIZER_CONFIG)
    lowercase = options.get("do_lower_case", options.get("lowercase", True))
    try:
        tokenizer = wordpiece.WordPiece.from_tokens(
            tokens, lowercase=bool(lowercase), strip_accents=options.get("strip_accents"),
            chinese_chars=bool(options.get("tokenize_chinese_chars",
                                           options.get("handle_chinese_chars", True))))
    except ValueError as e:
        raise UserError(f"{os.path.join(hf_dir, files[0])}: {e}") from None
    tokenizer.save(os.path.join(assets_dir, wordpiece.ASSET_NAME))
    return files


def export_tokenizer(workdir: str, hf_dir: str) -> list[str]:
    """`vocab.txt`, `tokenizer.json` and `tokenizer_config.json` of the run's vocabulary."""
    import tokenizers
    from tokenizers import processors

    from jaxformer.config import read_workdir_config
    from jaxformer.data import wordpiece

    path = wordpiece.saved_vocabulary(workdir)
    if not path.exists():
        return []
    max_length = read_workdir_config(workdir).model.get("max_position", 512)
    try:
        vocabulary = wordpiece.WordPiece.load(path)
    except ValueError as e:
        raise UserError(str(e)) from None
    with open(os.path.join(hf_dir, VOCAB_TXT), "w", encoding="utf-8") as f:
        f.writelines(f"{token}\n" for token in vocabulary.tokens)
    tokenizer = tokenizers.Tokenizer.from_str(vocabulary.to_str())
    cls, sep = vocabulary.cls_id, vocabulary.sep_id
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer.save(os.path.join(hf_dir, TOKENIZER_JSON))
    normalizer = json.loads(vocabulary.to_str()).get("normalizer") or {}
    config = dict(
        tokenizer_class="BertTokenizer", do_lower_case=normalizer.get("lowercase", True),
        strip_accents=normalizer.get("strip_accents"),
        tokenize_chinese_chars=normalizer.get("handle_chinese_chars", True),
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", model_max_length=max_length)
    with open(os.path.join(hf_dir, TOKENIZER_CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return [VOCAB_TXT, TOKENIZER_JSON, TOKENIZER_CONFIG]
