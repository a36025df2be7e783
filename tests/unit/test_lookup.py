"""Prompt lookup's proposals: what followed the latest earlier occurrence of the ending n-gram."""

from vinolm.engines.lookup import propose


def test_the_longest_recurring_suffix_wins_and_its_latest_occurrence() -> None:
    history = [1, 2, 3, 4, 5, 9, 2, 3, 8, 7, 1, 2, 3]
    assert propose(history, 2, 3) == [4, 5]  # "1 2 3" recurs once; "2 3" recurs later but is shorter
    assert propose(history, 2, 2) == [8, 7]  # at most 2-grams: the latest "2 3"
    assert propose(history, 10, 1) == [8, 7, 1, 2, 3]  # to the end of the history, no further


def test_no_recurrence_no_proposal() -> None:
    assert propose([1, 2, 3], 5, 3) == []
    assert propose([4], 5, 3) == []
    assert propose([], 5, 3) == []


def test_a_repeating_token_proposes_itself() -> None:
    assert propose([6, 6, 6, 6], 3, 2) == [6]  # the occurrence ending one before the last
