"""Beam search against brute-force enumeration, a plain-python beam search and greedy decoding.

The models are a GPT with a real KV cache, a Markov model (logits from a table indexed by the
previous token) and a "history" model whose logits depend on every token kept in its cache,
so that a wrong reordering of the cache changes the result.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.inference import generate as decode
from jaxformer.inference.beam_search import beam_search, greedy_search, tile_beams
from jaxformer.models.gpt import GPT, VARIANTS

BOS, EOS = 0, 1
# Only the function and the sizes are static: token ids, alpha and min_len may be traced.
jit_beam_search = jax.jit(beam_search, static_argnums=0,
                          static_argnames=("batch_size", "beam_size", "max_len"))
jit_greedy_search = jax.jit(greedy_search, static_argnums=0,
                            static_argnames=("batch_size", "max_len"))


# ----------------------------------------------------------------------------- references


def penalty(length, alpha):
    return ((5.0 + length) / 6.0) ** alpha


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


def sequence_logp(next_logp, seq):
    """log P(seq) under `next_logp(prefixes) -> [n, vocab]` log-probs."""
    return sum(next_logp([tuple(seq[:t])])[0, token] for t, token in enumerate(seq))


def brute_force(next_logp, *, vocab, max_len, alpha, min_len=0):
    """Every EOS-terminated sequence of at most `max_len` tokens, best score first."""
    others = [v for v in range(vocab) if v != EOS]
    hypotheses = []
    for length in range(min_len + 1, max_len + 1):
        for body in itertools.product(others, repeat=length - 1):
            seq = body + (EOS,)
            hypotheses.append((sequence_logp(next_logp, seq) / penalty(length, alpha), seq))
    return sorted((h for h in hypotheses if np.isfinite(h[0])), key=lambda h: -h[0])


def reference_beam_search(next_logp, *, vocab, beam_size, max_len, alpha, min_len=0,
                          eos_id=EOS):
    """Plain-python beam search, without early stopping: [(score, tokens)], best first."""
    alive, finished = [((), 0.0)], []
    for i in range(max_len):
        logp = next_logp([seq for seq, _ in alive])
        if i < min_len:
            logp[:, eos_id] = -np.inf
        candidates = sorted(
            ((lp + logp[j, v], j * vocab + v, seq + (v,))
             for j, (seq, lp) in enumerate(alive) for v in range(vocab)
             if np.isfinite(lp + logp[j, v])),
            key=lambda c: (-c[0], c[1]))[:2 * beam_size]
        finished += [(lp / penalty(i + 1, alpha), seq)
                     for lp, _, seq in candidates[:beam_size] if seq[-1] == eos_id]
        finished = sorted(finished, key=lambda h: -h[0])[:beam_size]
        alive = [(seq, lp) for lp, _, seq in candidates if seq[-1] != eos_id][:beam_size]
    return finished or [(lp / penalty(max_len, alpha), seq) for seq, lp in alive]


def padded(seq, max_len):
    return np.array(list(seq) + [0] * (max_len - len(seq)), np.int32)


def assert_hypotheses(sequences, scores, expected, max_len):
    """One example's `[beam, max_len]` / `[beam]` outputs equal `expected` [(score, tokens)]."""
    n = min(len(expected), len(scores))
    np.testing.assert_array_equal(sequences[:n], [padded(s, max_len) for _, s in expected[:n]])
    np.testing.assert_allclose(scores[:n], [score for score, _ in expected[:n]],
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.isneginf(scores[n:]))


# -------------------------------------------------------------------------------- models


class MarkovModel:
    """Logits `table[example, previous token]`; the cache holds each row's example index."""

    def __init__(self, table):
        self.table = np.asarray(table, np.float32)  # [batch, vocab (previous), vocab]
        self.batch, self.vocab = self.table.shape[:2]

    def logits_fn(self, tokens, cache):
        return jnp.asarray(self.table)[cache["example"], tokens[:, 0]], cache

    def cache(self, beam_size, examples=None):
        examples = np.arange(self.batch) if examples is None else np.asarray(examples)
        return tile_beams({"example": jnp.asarray(examples, jnp.int32)}, beam_size)

    def next_logp(self, example):
        return lambda prefixes: log_softmax(
            [self.table[example, p[-1] if p else BOS] for p in prefixes])


class HistoryModel:
    """Logits from a one-layer MLP over the one-hot of every input so far (BOS included).

    The cache holds the token history `[rows, max_len]`, each row's example index and a
    shared scalar step, like a KV cache with its `cache_index`.
    """

    def __init__(self, seed, *, batch, vocab, max_len, hidden=16, eos_bias=0.0):
        rng = np.random.default_rng(seed)
        self.batch, self.vocab, self.max_len = batch, vocab, max_len
        self.w1 = rng.normal(0, 1.5, (max_len * vocab, hidden)).astype(np.float32)
        self.w2 = rng.normal(0, 1.5, (hidden, vocab)).astype(np.float32)
        self.bias = rng.normal(0, 1.0, (batch, vocab)).astype(np.float32)
        self.bias[:, EOS] += eos_bias

    def logits_fn(self, tokens, cache):
        history = cache["history"].at[:, cache["step"]].set(tokens[:, 0])
        x = jax.nn.one_hot(history, self.vocab).reshape(history.shape[0], -1)  # -1 -> zeros
        logits = jnp.tanh(x @ self.w1) @ self.w2 + jnp.asarray(self.bias)[cache["example"]]
        return logits, dict(cache, history=history, step=cache["step"] + 1)

    def cache(self, beam_size, examples=None):
        examples = np.arange(self.batch) if examples is None else np.asarray(examples)
        return tile_beams({
            "example": jnp.asarray(examples, jnp.int32),
            "history": jnp.full((len(examples), self.max_len), -1, jnp.int32),
            "step": jnp.int32(0),
        }, beam_size)

    def next_logp(self, example):
        def fn(prefixes):
            logits = []
            for prefix in prefixes:
                x = np.zeros((self.max_len, self.vocab))
                x[np.arange(len(prefix) + 1), (BOS,) + tuple(prefix)] = 1.0
                logits.append(np.tanh(x.reshape(-1) @ self.w1) @ self.w2 + self.bias[example])
            return log_softmax(logits)
        return fn


def run_beam_search(model, *, beam_size, max_len, alpha=0.6, min_len=0, examples=None):
    batch = model.batch if examples is None else len(examples)
    sequences, scores = jit_beam_search(
        model.logits_fn, model.cache(beam_size, examples), batch_size=batch,
        beam_size=beam_size, max_len=max_len, bos_id=BOS, eos_id=EOS, alpha=alpha,
        min_len=min_len)
    assert sequences.shape == (batch, beam_size, max_len) and sequences.dtype == jnp.int32
    assert scores.shape == (batch, beam_size) and scores.dtype == jnp.float32
    return np.asarray(sequences), np.asarray(scores)


def run_greedy(model, *, max_len):
    out = jit_greedy_search(model.logits_fn, model.cache(1), batch_size=model.batch,
                            max_len=max_len, bos_id=BOS, eos_id=EOS)
    assert out.shape == (model.batch, max_len) and out.dtype == jnp.int32
    return np.asarray(out)


def unpad(row, eos_id=EOS):
    """Tokens up to and including the first EOS."""
    row = [int(t) for t in row]
    return tuple(row[:row.index(eos_id) + 1]) if eos_id in row else tuple(row)


# ------------------------------------------------------------------ GPT with a real KV cache

VOCAB, BLOCK, PROMPT_LEN, MAX_LEN = 67, 24, 3, 12


@pytest.fixture(scope="module")
def gpt():
    model = GPT(vocab_size=VOCAB, block_size=BLOCK, **VARIANTS["tiny"])
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, BLOCK), jnp.int32))["params"]
    params = jax.tree.map(lambda a: 5.0 * a, params)  # Sharp enough for varied continuations.
    prompt = np.random.default_rng(1).integers(2, VOCAB, (3, PROMPT_LEN)).astype(np.int32)
    # The search continues prompt + [BOS]: the reference continuation, recomputed from scratch.
    full = decode.greedy_by_recompute(
        model, params, np.concatenate([prompt, np.full((3, 1), BOS, np.int32)], axis=1),
        max_new_tokens=MAX_LEN, max_length=model.block_size)
    return model, params, prompt, np.asarray(full)[:, PROMPT_LEN + 1:], jax.jit(model.apply)


@functools.partial(jax.jit, static_argnames=("model", "beam_size"))
def gpt_search(model, params, prompt, *, beam_size, eos_id, alpha=0.6):
    """Greedy and beam search over the prefilled, beam-tiled KV cache of `prompt`."""
    def logits_fn(tokens, cache):
        logits, cache = decode.decode_step(model, params, cache, tokens)
        return logits[:, -1], cache

    cache = decode.init_cache(model, len(prompt), PROMPT_LEN + MAX_LEN)
    _, cache = decode.decode_step(model, params, cache, prompt)
    sizes = {"batch_size": len(prompt), "max_len": MAX_LEN, "bos_id": BOS, "eos_id": eos_id}
    greedy = greedy_search(logits_fn, cache, **sizes)
    sequences, scores = beam_search(logits_fn, tile_beams(cache, beam_size),
                                    beam_size=beam_size, alpha=alpha, **sizes)
    return greedy, sequences, scores


def gpt_next_logp(apply, params, prompt, beam_size):
    """Next-token log-probs of prompt + [BOS] + prefix by a full forward pass (no cache)."""
    def fn(prefixes):
        tokens = np.zeros((beam_size, PROMPT_LEN + 1 + MAX_LEN), np.int32)
        for j, prefix in enumerate(prefixes):
            tokens[j, :PROMPT_LEN + 1 + len(prefix)] = [*prompt, BOS, *prefix]
        logits = np.asarray(apply({"params": params}, tokens))
        return log_softmax([logits[j, PROMPT_LEN + len(p)] for j, p in enumerate(prefixes)])
    return fn


# With alpha 0, one beam is greedy decoding by construction. With alpha > 0 it may go on after
# greedy's EOS, when a longer hypothesis could still score higher; here it does not.
@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_1_is_greedy_on_gpt(gpt, alpha):
    model, params, prompt, reference, apply = gpt
    eos_id = int(reference[2, 0])
    expected = np.stack([padded(unpad(r, eos_id), MAX_LEN) for r in reference])
    assert eos_id not in reference[0] and eos_id in reference[1, 1:]  # Various lengths.
    greedy, sequences, scores = map(np.asarray, gpt_search(
        model, params, prompt, beam_size=1, eos_id=eos_id, alpha=alpha))
    np.testing.assert_array_equal(greedy, expected)
    np.testing.assert_array_equal(sequences[:, 0], expected)
    for b in range(3):
        tokens = unpad(expected[b], eos_id)
        logp = sequence_logp(gpt_next_logp(apply, params, prompt[b], 1), tokens)
        np.testing.assert_allclose(scores[b, 0], logp / penalty(len(tokens), alpha), rtol=1e-4)


@pytest.mark.slow
def test_beam_search_on_gpt_matches_recompute_reference(gpt):
    model, params, prompt, reference, apply = gpt
    eos_id, beam_size = int(reference[1, 1]), 4
    _, sequences, scores = map(np.asarray, gpt_search(
        model, params, prompt, beam_size=beam_size, eos_id=eos_id))
    assert np.isneginf(scores[0, -1]) and eos_id not in sequences[2]  # Empty slot; unfinished.
    for b in range(3):
        expected = reference_beam_search(
            gpt_next_logp(apply, params, prompt[b], beam_size), vocab=VOCAB,
            beam_size=beam_size, max_len=MAX_LEN, alpha=0.6, eos_id=eos_id)
        assert_hypotheses(sequences[b], scores[b], expected, MAX_LEN)


# ------------------------------------------------------------------------ crafted models


def markov_table(probs):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, np.float64))


def random_markov(seed, *, batch, vocab, eos_bias=0.0):
    """Random transitions; BOS (0) is never generated, so that no two sequences tie."""
    table = np.random.default_rng(seed).normal(0, 2.0, (batch, vocab, vocab))
    table[..., EOS] += eos_bias
    table[..., BOS] = -np.inf
    return MarkovModel(table)


def test_tile_beams():
    tree = {"a": jnp.arange(6).reshape(2, 3), "index": jnp.int32(7), "b": [jnp.array([5, 6])]}
    tiled = tile_beams(tree, 3)
    np.testing.assert_array_equal(tiled["a"], [[0, 1, 2]] * 3 + [[3, 4, 5]] * 3)
    np.testing.assert_array_equal(tiled["b"][0], [5, 5, 5, 6, 6, 6])
    assert tiled["index"].shape == () and int(tiled["index"]) == 7


def test_beam_search_beats_greedy_on_crafted_model():
    # Greedy takes 2 (p = 0.5), whose continuations are all unlikely; 3 (p = 0.4) is then
    # followed by EOS with p = 0.95. Token 0 (BOS) is never generated.
    model = MarkovModel(markov_table([[
        [0, .05, .50, .40, .05],  # After BOS.
        [0, .25, .25, .25, .25],  # After EOS (unused).
        [0, .30, .26, .24, .20],  # After 2.
        [0, .95, .02, .02, .01],  # After 3.
        [0, .50, .20, .20, .10],  # After 4.
    ]]))
    greedy = run_greedy(model, max_len=6)
    np.testing.assert_array_equal(greedy[0], padded((2, EOS), 6))
    greedy_score = np.log(.5 * .3) / penalty(2, 0.6)

    sequences, scores = run_beam_search(model, beam_size=2, max_len=6)
    np.testing.assert_array_equal(sequences[0], [padded((3, EOS), 6), padded((2, EOS), 6)])
    np.testing.assert_allclose(scores[0], [np.log(.4 * .95) / penalty(2, 0.6), greedy_score],
                               rtol=1e-6)
    assert scores[0, 0] > greedy_score + 0.5

    sequences, scores = run_beam_search(model, beam_size=1, max_len=6)
    np.testing.assert_array_equal(sequences[:, 0], greedy)
    np.testing.assert_allclose(scores[0, 0], greedy_score, rtol=1e-6)


@pytest.mark.parametrize("alpha,expected", [(0.0, (EOS,)), (3.0, (2, 3, EOS))])
def test_one_beam_goes_on_while_a_longer_hypothesis_can_win(alpha, expected):
    """Greedy stops at once, with [EOS]. With alpha 3, [2, 3, EOS] scores higher, although
    log P(2) / lp(2) is already below the score of [EOS]: the bound must use lp(max_len)."""
    model = MarkovModel(markov_table([[
        [0, .50, .30, .10, .10],  # After BOS.
        [0, .25, .25, .25, .25],  # After EOS (unused).
        [0, .005, .005, .985, .005],  # After 2.
        [0, .90, .03, .03, .04],  # After 3.
        [0, .25, .25, .25, .25],  # After 4.
    ]]))
    max_len = 5
    np.testing.assert_array_equal(run_greedy(model, max_len=max_len)[0], padded((EOS,), max_len))
    assert np.log(.3) / penalty(2, 3.0) < np.log(.5) < np.log(.3 * .985 * .9) / penalty(3, 3.0)
    sequences, scores = run_beam_search(model, beam_size=1, max_len=max_len, alpha=alpha)
    best = brute_force(model.next_logp(0), vocab=5, max_len=max_len, alpha=alpha)[0]
    assert best[1] == expected
    assert_hypotheses(sequences[0], scores[0], [best], max_len)


def test_beam_search_vs_greedy_and_reference_on_random_models():
    """32 random models: the reference's hypotheses, and here never worse than greedy.

    (Beam search can in principle score below greedy, when greedy's path leaves the beam.)
    """
    max_len, beam_size, vocab = 8, 4, 6
    model = random_markov(0, batch=32, vocab=vocab)
    sequences, scores = run_beam_search(model, beam_size=beam_size, max_len=max_len)
    greedy = run_greedy(model, max_len=max_len)
    finished, beats_greedy = 0, 0
    for b in range(model.batch):
        expected = reference_beam_search(model.next_logp(b), vocab=vocab, beam_size=beam_size,
                                         max_len=max_len, alpha=0.6)
        assert_hypotheses(sequences[b], scores[b], expected, max_len)
        tokens = unpad(greedy[b])
        if tokens[-1] != EOS:
            continue  # Unfinished greedy hypotheses have no comparable score.
        finished += 1
        greedy_score = sequence_logp(model.next_logp(b), tokens) / penalty(len(tokens), 0.6)
        assert scores[b, 0] >= greedy_score - 1e-5
        beats_greedy += scores[b, 0] > greedy_score + 1e-3
    assert finished >= 16 and beats_greedy >= 5  # Greedy is not already optimal everywhere.


@pytest.mark.parametrize("model_cls", [MarkovModel, HistoryModel])
@pytest.mark.parametrize("alpha,min_len", [(0.6, 0), (0.0, 0), (2.0, 2)])
def test_exhaustive_beam_finds_the_argmax(model_cls, alpha, min_len):
    """A beam as large as the set of all sequences keeps every finished hypothesis."""
    # Three tokens besides EOS: 40 sequences finish within 4 tokens, 81 do not.
    max_len, beam_size = 4, 40 + 81
    if model_cls is MarkovModel:
        vocab, model = 5, random_markov(1, batch=2, vocab=5)  # Token 0 is never generated.
    else:
        vocab, model = 4, HistoryModel(1, batch=2, vocab=4, max_len=max_len)
    sequences, scores = run_beam_search(model, beam_size=beam_size, max_len=max_len,
                                        alpha=alpha, min_len=min_len)
    for b in range(2):
        expected = brute_force(model.next_logp(b), vocab=vocab, max_len=max_len, alpha=alpha,
                               min_len=min_len)
        assert len(expected) == sum(3 ** n for n in range(min_len, max_len))
        assert_hypotheses(sequences[b], scores[b], expected, max_len)
        np.testing.assert_array_equal(sequences[b, len(expected):], 0)  # Empty slots.


@pytest.mark.parametrize("beam_size,alpha", [(2, 0.6), (3, 0.0), (4, 1.0)])
def test_history_in_cache_follows_the_beams(beam_size, alpha):
    """Logits depend on the whole history kept in the cache: a wrong gather changes them."""
    max_len, vocab = 7, 5
    model = HistoryModel(2, batch=4, vocab=vocab, max_len=max_len)
    sequences, scores = run_beam_search(model, beam_size=beam_size, max_len=max_len,
                                        alpha=alpha)
    for b in range(model.batch):
        expected = reference_beam_search(model.next_logp(b), vocab=vocab, beam_size=beam_size,
                                         max_len=max_len, alpha=alpha)
        assert_hypotheses(sequences[b], scores[b], expected, max_len)
    assert len({len(unpad(s)) for s in sequences.reshape(-1, max_len)}) >= 3  # Many lengths.


def test_eos_padding_sorting_and_scores():
    max_len = 8
    model = HistoryModel(3, batch=4, vocab=6, max_len=max_len)
    sequences, scores = run_beam_search(model, beam_size=4, max_len=max_len)
    assert np.all(scores[:, :-1] >= scores[:, 1:])
    finished_rows = [EOS in row for row in sequences]
    assert any(finished_rows) and not all(finished_rows) and np.isneginf(scores).any()
    for b, finished in enumerate(finished_rows):
        for seq, score in zip(sequences[b], scores[b]):
            if np.isneginf(score):  # An empty slot: fewer than 4 hypotheses finished.
                assert finished
                np.testing.assert_array_equal(seq, 0)
                continue
            eos_at = np.flatnonzero(seq == EOS)
            if finished:  # Exactly one EOS, then padding.
                assert len(eos_at) == 1
                np.testing.assert_array_equal(seq[eos_at[0] + 1:], 0)
                tokens = tuple(seq[:eos_at[0] + 1])
            else:  # Alive hypotheses, max_len tokens.
                assert len(eos_at) == 0
                tokens = tuple(seq)
            np.testing.assert_allclose(
                score, sequence_logp(model.next_logp(b), tokens) / penalty(len(tokens), 0.6),
                rtol=1e-5)


def test_rows_without_finished_hypotheses_return_alive_beams():
    max_len, vocab = 5, 4
    model = random_markov(4, batch=2, vocab=vocab)
    model.table[0, :, EOS] = -np.inf  # Example 0 can never finish.
    sequences, scores = run_beam_search(model, beam_size=3, max_len=max_len)
    assert EOS not in sequences[0] and np.all(np.isfinite(scores[0]))
    assert EOS in sequences[1, 0]
    for b in range(2):
        expected = reference_beam_search(model.next_logp(b), vocab=vocab, beam_size=3,
                                         max_len=max_len, alpha=0.6)
        assert_hypotheses(sequences[b], scores[b], expected, max_len)


def test_one_token():
    # [EOS] is the only sequence that can finish. It does in example 0, where it ranks in the
    # top 3; in example 1 it ranks 4th, is not kept, and the 3 alive hypotheses come back.
    model = MarkovModel(markov_table([[[.2, .5, .2, .1]] * 4, [[.3, .05, .4, .25]] * 4]))
    sequences, scores = run_beam_search(model, beam_size=3, max_len=1)
    np.testing.assert_array_equal(sequences[:, :, 0], [[EOS, 0, 0], [2, 0, 3]])
    np.testing.assert_allclose(scores[0, 0], np.log(.5) / penalty(1, 0.6), rtol=1e-6)
    assert np.all(np.isneginf(scores[0, 1:]))
    np.testing.assert_allclose(scores[1], np.log([.4, .3, .25]) / penalty(1, 0.6), rtol=1e-6)


@pytest.mark.parametrize("alpha,max_calls", [(0.0, 4), (0.6, 20)])
def test_early_stopping_keeps_the_result(alpha, max_calls):
    """EOS is likely: the search stops well before max_len, with the full search's result.

    The bound on what alive hypotheses can still reach is tighter without length penalty.
    """
    calls = []
    model, max_len = random_markov(6, batch=3, vocab=5, eos_bias=3.0), 30

    def counting_logits_fn(tokens, cache):
        jax.debug.callback(lambda: calls.append(1))
        return model.logits_fn(tokens, cache)

    sequences, scores = jit_beam_search(
        counting_logits_fn, model.cache(3), batch_size=3, beam_size=3, max_len=max_len,
        bos_id=BOS, eos_id=EOS, alpha=alpha)
    jax.block_until_ready(sequences)
    assert 2 <= len(calls) <= max_calls
    for b in range(3):
        expected = reference_beam_search(model.next_logp(b), vocab=5, beam_size=3,
                                         max_len=max_len, alpha=alpha)
        assert_hypotheses(np.asarray(sequences[b]), np.asarray(scores[b]), expected, max_len)


@pytest.mark.slow
def test_jit_and_batch_independence():
    max_len, beam_size = 6, 3
    model = HistoryModel(7, batch=3, vocab=5, max_len=max_len)
    sequences, scores = run_beam_search(model, beam_size=beam_size, max_len=max_len)
    greedy = run_greedy(model, max_len=max_len)
    assert len({seq.tobytes() for seq in sequences}) == model.batch  # The examples differ.
    for b in range(model.batch):
        one_seq, one_score = run_beam_search(model, beam_size=beam_size, max_len=max_len,
                                             examples=[b])
        np.testing.assert_array_equal(one_seq[0], sequences[b])
        np.testing.assert_allclose(one_score[0], scores[b], rtol=1e-6)
        one_greedy = jit_greedy_search(model.logits_fn, model.cache(1, [b]), batch_size=1,
                                       max_len=max_len, bos_id=BOS, eos_id=EOS)
        np.testing.assert_array_equal(one_greedy[0], greedy[b])
    eager_seq, eager_score = beam_search(  # Not under jit.
        model.logits_fn, model.cache(beam_size), batch_size=model.batch, beam_size=beam_size,
        max_len=max_len, bos_id=BOS, eos_id=EOS)
    np.testing.assert_array_equal(eager_seq, sequences)
    np.testing.assert_allclose(eager_score, scores, rtol=1e-6)


def test_candidate_top_k_is_not_compiled_as_a_full_sort():
    """The 2K best of the K * V candidates must stay a top-k in the compiled loop: a full sort
    of `[batch, K * V]` made each step ~100x slower on XLA:CPU."""
    batch, beam, vocab = 4, 4, 2000
    table = jax.random.normal(jax.random.key(0), (vocab, vocab))

    def logits_fn(tokens, cache):
        return table[tokens[:, 0]], cache

    search = jax.jit(lambda cache: beam_search(
        logits_fn, cache, batch_size=batch, beam_size=beam, max_len=5, bos_id=BOS, eos_id=EOS))
    hlo = search.lower(jnp.zeros(batch * beam)).compile().as_text()
    assert f"[{batch},{beam * vocab}]" in hlo  # The candidates are there...
    sorts = [line for line in hlo.splitlines() if " sort(" in line]
    assert not any(f"[{batch},{beam * vocab}]" in line for line in sorts), sorts  # ...unsorted.
