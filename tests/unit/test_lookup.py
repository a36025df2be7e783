"""Prompt lookup's proposals: what followed the latest earlier occurrence of the ending n-gram."""

from vinolm.engines.lookup import next_count, propose


def test_the_longest_recurring_suffix_wins_and_its_latest_full_occurrence() -> None:
    history = [1, 2, 3, 4, 5, 9, 2, 3, 8, 7, 1, 2, 3]
    assert propose(history, 2, 3) == [4, 5]  # "1 2 3" recurs once; "2 3" recurs later but is shorter
    assert propose(history, 2, 2) == [8, 7]  # at most 2-grams: the latest "2 3"
    assert propose(history, 4, 2) == [8, 7, 1, 2]
    assert propose(history, 6, 2) == [4, 5, 9, 2, 3, 8]  # the latest has only 5 after it: the earliest
    assert propose(history, 20, 1) == history[3:]  # to the end of the history, no further


def test_no_recurrence_no_proposal() -> None:
    assert propose([1, 2, 3], 5, 3) == []
    assert propose([4], 5, 3) == []
    assert propose([], 5, 3) == []


def test_a_loop_proposes_as_many_turns_as_it_can() -> None:
    assert propose([6, 6, 6, 6], 3, 2) == [6, 6]  # the earliest occurrence: two tokens follow it
    loop = [9, 1, 2, 1, 2, 1, 2, 1, 2]
    assert propose(loop, 4, 3) == [1, 2, 1, 2]


def test_single_tokens_propose_only_when_asked() -> None:
    history = [5, 1, 9, 8, 7, 1]
    assert propose(history, 2, 3) == [9, 8]
    assert propose(history, 2, 3, min_ngram=2) == []


def test_the_count_grows_after_a_full_hit_and_shrinks_after_a_miss() -> None:
    assert next_count(5, 10, proposed=5, accepted=5) == 7
    assert next_count(9, 10, proposed=9, accepted=9) == 10
    assert next_count(5, 10, proposed=5, accepted=2) == 4
    assert next_count(1, 10, proposed=1, accepted=0) == 1
    assert next_count(4, 10, proposed=0, accepted=0) == 4  # nothing proposed: nothing learnt


def test_fewer_tokens_are_proposed_where_a_checking_pass_computes_in_f32() -> None:
    from vinolm.engines.base import PROPOSED_TOKENS, Speculation
    from vinolm.engines.lookup import proposed_tokens

    lookup = Speculation()
    avx2, alder_lake = {"avx2", "fma", "f16c"}, {"avx2", "fma", "f16c", "avx_vnni"}
    zen4 = avx2 | {"avx512f", "avx512_vnni", "avx512_bf16"}
    assert proposed_tokens(lookup, "CPU", avx2) == 3
    assert proposed_tokens(lookup, "CPU.0", avx2) == 3
    assert proposed_tokens(lookup, "CPU", {"sse4_2", "avx"}) == 3  # older still: f32 as well
    for flags in (alder_lake, zen4, zen4 | {"amx_bf16", "amx_int8"}):  # int8 activations: passes are cheap
        assert proposed_tokens(lookup, "CPU", flags) == PROPOSED_TOKENS == 5
    assert proposed_tokens(lookup, "GPU", avx2) == 5  # the host's CPU does not check the tokens there
    draft = Speculation(draft="smollm2-135m")
    assert proposed_tokens(draft, "CPU", avx2) == 2  # each proposal also costs a draft step
    assert proposed_tokens(draft, "CPU", zen4) == 5
    assert proposed_tokens(Speculation(num_assistant_tokens=7), "CPU", avx2) == 7  # the server said
