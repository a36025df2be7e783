"""Decoding math of the native engine, checked against independent references.

The sampler is tested statistically: 20k draws on synthetic logits must follow the
distribution a straightforward full-sort reference predicts (chi-square, fixed seeds).
Beam search is checked against brute-force enumeration and, in the slow test, against
transformers' own ``generate(num_beams=...)`` on a tiny random Llama.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from vinolm.engines.sampling import (
    BeamSearch,
    Sampler,
    TokenCounts,
    TokenHistory,
    apply_presence_frequency,
    apply_repetition_penalty,
    draw_index,
    log_softmax,
    min_p,
    stop_token_ids,
    top_k,
    top_p,
)
from vinolm.types import GenerationParams

DRAWS = 20_000


def synthetic_logits(vocab: int, scale: float = 2.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(vocab) * scale).astype(np.float32)


def reference_probs(logits: np.ndarray, temperature: float, k: int, p: float, m: float) -> np.ndarray:
    """HF warper order (temperature, top-k, top-p, min-p) with plain full sorts."""
    scores = logits.astype(np.float64) / temperature
    order = np.argsort(-scores)
    keep = np.zeros(scores.size, dtype=bool)
    keep[order[: k or scores.size]] = True
    probs = np.where(keep, np.exp(scores - scores.max()), 0.0)
    probs /= probs.sum()
    if p < 1.0:
        cumulative = np.cumsum(probs[order])
        size = int(np.argmax(cumulative >= p)) + 1
        keep[:] = False
        keep[order[:size]] = True
        probs = np.where(keep, probs, 0.0) / probs[keep].sum()
    if m > 0.0:
        probs = np.where(probs >= m * probs.max(), probs, 0.0)
    return probs / probs.sum()


def chi_square_pvalue(tokens: np.ndarray, expected: np.ndarray) -> float:
    """Goodness of fit, pooling the rare kept tokens so every bin expects >= 5 draws."""
    observed = np.bincount(tokens, minlength=expected.size).astype(float)
    wanted = expected * tokens.size
    big = wanted >= 5
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(wanted[big], wanted[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(stats.chisquare(obs, exp).pvalue)


# -- penalties ---------------------------------------------------------------------


def test_repetition_penalty_divides_positive_multiplies_negative_and_touches_nothing_else() -> None:
    logits = np.array([2.0, -2.0, 0.0, 3.0, -1.0, 5.0], dtype=np.float32)
    out = apply_repetition_penalty(logits.copy(), np.array([0, 1, 2]), 2.0)
    np.testing.assert_array_equal(out, [1.0, -4.0, 0.0, 3.0, -1.0, 5.0])


def test_presence_and_frequency_subtract_per_occurrence() -> None:
    logits = np.zeros(6, dtype=np.float32)
    counts = TokenCounts(np.array([4, 1]), np.array([3, 1]))
    out = apply_presence_frequency(logits, counts, presence=0.5, frequency=0.25)
    np.testing.assert_allclose(out, [0.0, -0.75, 0.0, 0.0, -1.25, 0.0])


def test_token_history_counts_incrementally_past_its_first_buffer() -> None:
    history = TokenHistory([7, 7, 3])
    generated = [3, 9, 9] + list(range(100, 200)) + [9]
    for token in generated:
        history.append(token)
    assert sorted(history.seen_ids.tolist()) == sorted({7, 3, *generated})
    counted = dict(zip(*(a.tolist() for a in history.generated_counts)))
    assert counted == {t: generated.count(t) for t in set(generated)}
    assert history.generated == generated


def test_sampler_penalties_change_exactly_the_penalized_tokens() -> None:
    params = GenerationParams(repetition_penalty=1.5, presence_penalty=0.5, frequency_penalty=0.5)
    history = TokenHistory([1, 2])
    history.append(2)
    history.append(2)
    logits = synthetic_logits(50)
    out = Sampler(params).penalize(logits, history)
    expected = logits.copy()
    for token in (1, 2):
        expected[token] = expected[token] / 1.5 if expected[token] > 0 else expected[token] * 1.5
    expected[2] -= 0.5 + 2 * 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert np.flatnonzero(out != logits).tolist() == [1, 2]


# -- filters -----------------------------------------------------------------------


def test_top_k_keeps_the_k_largest() -> None:
    logits = synthetic_logits(1000)
    assert set(top_k(logits, 10).tolist()) == set(np.argsort(-logits)[:10].tolist())


@pytest.mark.parametrize(("scale", "p"), [(4.0, 0.9), (0.3, 0.9), (2.0, 0.5)])
def test_top_p_is_the_smallest_set_reaching_p(scale: float, p: float) -> None:
    """Peaked logits take the partition path, flat ones the full-sort fallback."""
    logits = synthetic_logits(5000, scale=scale)
    keep = top_p(logits, p)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probs)
    size = int(np.argmax(np.cumsum(probs[order]) >= p)) + 1
    assert set(keep.tolist()) == set(order[:size].tolist())


def test_top_p_keeps_at_least_the_top_token() -> None:
    logits = np.array([0.0, 10.0, 1.0], dtype=np.float32)
    assert top_p(logits, 1e-9).tolist() == [1]


def test_min_p_keeps_tokens_within_factor_of_the_best() -> None:
    probs = np.array([0.5, 0.2, 0.04, 0.26])
    keep = min_p(np.log(probs).astype(np.float32), 0.1)
    assert sorted(keep.tolist()) == [0, 1, 3]


def test_draw_index_is_the_inverse_cdf() -> None:
    rng = np.random.default_rng(1)
    weights = rng.random(1000)
    weights[rng.random(1000) < 0.5] = 0.0
    cdf = np.cumsum(weights) / weights.sum()
    for u in rng.random(500):
        assert draw_index(weights, float(u)) == int(np.searchsorted(cdf, u, side="right"))


# -- the sampler -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "k", "p", "m"),
    [(1.0, 0, 1.0, 0.0), (0.7, 20, 1.0, 0.0), (1.3, 0, 0.8, 0.0), (1.0, 0, 1.0, 0.05),
     (0.9, 50, 0.9, 0.02)],
)
def test_sampler_draws_follow_the_filtered_distribution(
    temperature: float, k: int, p: float, m: float
) -> None:
    logits = synthetic_logits(300, scale=1.5)
    params = GenerationParams(temperature=temperature, top_k=k, top_p=p, min_p=m, seed=1234)
    sampler = Sampler(params)
    expected = reference_probs(logits, temperature, k, p, m)
    tokens = np.array([sampler.sample(logits) for _ in range(DRAWS)])
    assert expected[tokens].min() > 0, "a filtered-out token was drawn"
    assert chi_square_pvalue(tokens, expected) > 0.001


def test_sampled_logprob_is_the_models_not_the_filtered_one() -> None:
    """OpenAI's (and openvino-genai's) logprob: log-softmax of the raw logits, whatever
    temperature and filters the draw used."""
    logits = synthetic_logits(300, scale=1.5)
    sampler = Sampler(GenerationParams(temperature=0.7, top_k=20, seed=3))
    token, logprob = sampler.next_token(logits, TokenHistory())
    assert logprob == pytest.approx(float(log_softmax(logits)[token]), abs=1e-5)


def test_sampler_never_draws_outside_the_allowed_mask() -> None:
    logits = synthetic_logits(300, scale=1.5)
    allowed = np.zeros(300, dtype=bool)
    allowed[[5, 77, 290]] = True
    for params in (GenerationParams(), GenerationParams(temperature=1.0, top_k=10, top_p=0.9, seed=2)):
        sampler = Sampler(params)
        picks = {sampler.next_token(logits, TokenHistory(), allowed)[0] for _ in range(200)}
        assert picks <= {5, 77, 290}
    greedy = Sampler(GenerationParams()).next_token(logits, TokenHistory(), allowed)[0]
    assert greedy == max((5, 77, 290), key=lambda i: logits[i])


def test_sampler_chi_square_rejects_a_wrong_distribution() -> None:
    """Guards the statistical test itself: unfiltered draws fail a top-k expectation."""
    logits = synthetic_logits(300, scale=1.5)
    sampler = Sampler(GenerationParams(temperature=1.0, seed=5))
    tokens = np.array([sampler.sample(logits) for _ in range(DRAWS)])
    assert chi_square_pvalue(tokens, reference_probs(logits, 0.8, 0, 1.0, 0.0)) < 0.001


def run(params: GenerationParams, steps: int = 40) -> list[int]:
    sampler, history = Sampler(params), TokenHistory([3])
    table = np.random.default_rng(7).standard_normal((64, 64)).astype(np.float32)
    token = 3
    for _ in range(steps):
        token, _ = sampler.next_token(table[token], history)
    return history.generated


def test_same_seed_same_tokens_other_seed_differs() -> None:
    params = GenerationParams(temperature=1.0, top_p=0.95, repetition_penalty=1.2, seed=11)
    assert run(params) == run(params)
    assert run(params) != run(params.with_(seed=12))


def test_greedy_is_argmax_with_its_logprob() -> None:
    logits = synthetic_logits(49152)
    token, logprob = Sampler(GenerationParams()).next_token(logits, TokenHistory())
    assert token == int(np.argmax(logits))
    assert logprob == pytest.approx(float(log_softmax(logits)[token]), abs=1e-5)


def test_greedy_applies_repetition_penalty_like_hf() -> None:
    logits = np.array([1.0, 3.0, 2.5], dtype=np.float32)
    sampler = Sampler(GenerationParams(repetition_penalty=1.5))
    assert sampler.next_token(logits, TokenHistory([1]))[0] == 2
    assert sampler.next_token(logits, TokenHistory([0]))[0] == 1


def test_stop_ids_join_eos_and_explicit_ids_unless_eos_is_ignored() -> None:
    params = GenerationParams(stop_token_ids=[5])
    assert stop_token_ids(params, [2]) == {2, 5}
    assert stop_token_ids(params.with_(ignore_eos=True), [2]) == {5}
    assert Sampler(params, [2]).is_stop(2)


# -- beam search -------------------------------------------------------------------


def drive(
    search: BeamSearch, table: np.ndarray, rows: np.ndarray | None = None
) -> list[tuple[list[int], float]]:
    """A fake model whose log-probs depend on the last token only (token 0 starts)."""
    rows = np.zeros(search.num_beams, dtype=np.int64) if rows is None else rows
    while not search.done:
        rows, _ = search.step(table[rows])
    return search.finalize()


def test_first_step_expands_only_beam_zero() -> None:
    logprobs = np.tile(log_softmax(synthetic_logits(100)), (4, 1))
    tokens, beams = BeamSearch(4, 5).step(logprobs)
    assert beams.tolist() == [0, 0, 0, 0]
    assert tokens.tolist() == np.argsort(-logprobs[0])[:4].tolist()


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, -2.0])
def test_without_eos_a_wide_beam_finds_the_brute_force_best(length_penalty: float) -> None:
    """With num_beams >= vocab**(T-1) nothing is pruned before the last step, so the
    result must be the best of all vocab**T sequences."""
    vocab, length, beams = 3, 3, 9
    table = log_softmax(np.random.default_rng(3).standard_normal((vocab, vocab)) * 2)
    search = BeamSearch(beams, length, length_penalty=length_penalty, num_return_sequences=4)
    got = drive(search, table)

    def score(seq: tuple[int, ...]) -> float:
        prev = (0, *seq[:-1])
        return sum(float(table[a, b]) for a, b in zip(prev, seq)) / length**length_penalty

    best = sorted(itertools.product(range(vocab), repeat=length), key=score, reverse=True)[:4]
    assert [tuple(seq) for seq, _ in got] == best
    assert [s for _, s in got] == pytest.approx([score(seq) for seq in best], abs=1e-5)


def test_eos_finishes_a_hypothesis_and_stops_when_it_cannot_be_beaten() -> None:
    vocab, eos = 6, 5
    table = np.full((vocab, vocab), np.log(0.01), dtype=np.float32)
    table[:, eos] = np.log(0.9)  # every beam wants to end at once
    search = BeamSearch(2, 50, [eos])
    tokens, _ = search.step(table[[0, 0]])
    assert eos not in tokens.tolist()  # ended candidates never run on
    tokens, _ = search.step(table[tokens])
    assert search.done  # finished set full, live beams only get worse
    results = search.finalize()
    assert results[0] == ([eos], pytest.approx(np.log(0.9), abs=1e-6))
    with pytest.raises(RuntimeError):
        search.step(table[tokens])


def probs_table(*rows: list[float]) -> np.ndarray:
    return np.log(np.array(rows, dtype=np.float64)).astype(np.float32)


def test_each_eos_id_widens_the_candidates_so_enough_beams_stay_alive() -> None:
    """Three of the four best continuations end: with two EOS ids HF keeps 3 x beams
    candidates, so the second beam continues a live sequence, not an ended one."""
    table = probs_table(
        [0.04, 0.06, 0.02, 0.02, 0.86],
        [0.05, 0.05, 0.50, 0.10, 0.30],
        [0.2] * 5, [0.2] * 5,
        [0.02, 0.02, 0.24, 0.22, 0.50],
    )
    search = BeamSearch(2, 10, eos_token_ids=[2, 3])
    tokens, _ = search.step(table[[0, 0]])
    assert tokens.tolist() == [4, 1]
    tokens, beams = search.step(table[tokens])
    assert (tokens.tolist(), beams.tolist()) == ([4, 4], [0, 1])
    assert not search.done


def test_early_stop_compares_the_live_beam_at_its_length_penalized_score() -> None:
    """Raw, the live beam (-1.27) is already worse than both finished ones (-1.20),
    but divided by its length it is better, so HF keeps searching and wins with it."""
    table = probs_table([1e-6, 0.4, 0.3, 0.3 - 1e-6], [0.05, 0.7, 0.1, 0.15])
    search = BeamSearch(2, 4, eos_token_ids=[2, 3])
    tokens, _ = search.step(table[[0, 0]])
    tokens, _ = search.step(table[tokens])
    assert not search.done
    assert drive(search, table, tokens)[0][0] == [1, 1, 1, 1]


def test_an_eos_ranked_below_num_beams_is_not_a_hypothesis() -> None:
    """HF only admits ended candidates among the top ``num_beams``; the rest of the
    candidates exist to keep beams alive. Here EOS ranks third, so it is dropped even
    though it would outscore every length-2 sequence."""
    start = np.full(200, 0.02 / 197)
    start[[1, 2, 3]] = [0.7, 0.2, 0.08]
    table = probs_table(start.tolist(), *[[1 / 200] * 200] * 199)
    search = BeamSearch(2, 2, eos_token_ids=[3], num_return_sequences=2)
    assert [len(seq) for seq, _ in drive(search, table)] == [2, 2]


def test_max_new_tokens_ends_the_search_and_counts_length() -> None:
    table = log_softmax(np.random.default_rng(4).standard_normal((10, 10)))
    search = BeamSearch(3, 4, num_return_sequences=3)
    results = drive(search, table)
    assert [len(seq) for seq, _ in results] == [4, 4, 4]
    assert [s for _, s in results] == sorted((s for _, s in results), reverse=True)


def test_finalize_before_done_returns_the_live_beams() -> None:
    table = log_softmax(np.random.default_rng(5).standard_normal((10, 10)))
    search = BeamSearch(2, 100, num_return_sequences=2)
    tokens, _ = search.step(table[[0, 0]])
    tokens, _ = search.step(table[tokens])
    results = search.finalize()
    assert [seq[-1] for seq, _ in results] == tokens.tolist()
    assert search.done


def test_from_params_reads_beams_and_stop_ids() -> None:
    params = GenerationParams(num_beams=3, max_new_tokens=7, stop_token_ids=[9], ignore_eos=True)
    search = BeamSearch.from_params(params, eos_token_ids=[2])
    assert (search.num_beams, search.max_new_tokens) == (3, 7)
    table = np.full((10, 10), -5.0, dtype=np.float32)
    table[:, 2] = -0.1  # eos is ignored: it may run on
    table[:, 9] = -0.2
    tokens, _ = search.step(table[[0, 0, 0]])
    assert 2 in tokens.tolist() and 9 not in tokens.tolist()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("num_beams", "max_new", "eos", "length_penalty", "n_return"),
    [(2, 8, [2], 1.0, 1), (3, 10, [2], 1.0, 3), (4, 12, [2, 7], 0.5, 2),
     (4, 12, [2], -1.0, 4), (5, 6, [], 1.0, 2), (3, 12, [2], 2.0, 3)],
)
def test_matches_transformers_generate_on_a_tiny_llama(
    num_beams: int, max_new: int, eos: list[int], length_penalty: float, n_return: int
) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # peaked: EOS wins and loses along the way
    prompt = torch.tensor([[1, 5, 9, 14]])
    with torch.no_grad():
        out = model.generate(
            prompt, num_beams=num_beams, do_sample=False, max_new_tokens=max_new,
            eos_token_id=eos or None, pad_token_id=0, length_penalty=length_penalty,
            num_return_sequences=n_return, return_dict_in_generate=True, output_scores=True,
        )
    search = BeamSearch(num_beams, max_new, eos, length_penalty, n_return)
    rows = prompt.repeat(num_beams, 1)
    while not search.done:
        with torch.no_grad():
            logits = model(rows).logits[:, -1, :].float()
        tokens, beams = search.step(torch.log_softmax(logits, -1).numpy())
        rows = torch.cat([rows[torch.from_numpy(beams)], torch.from_numpy(tokens)[:, None]], 1)
    ours = search.finalize()
    theirs = [seq[prompt.shape[1]:].tolist() for seq in out.sequences]
    assert [seq for seq, _ in ours] == [t[: len(seq)] for t, (seq, _) in zip(theirs, ours)]
    assert all(set(t[len(seq):]) <= set(eos) for t, (seq, _) in zip(theirs, ours))
    assert [s for _, s in ours] == pytest.approx(out.sequences_scores.tolist(), abs=1e-5)
