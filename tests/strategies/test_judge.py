from __future__ import annotations

from moa.strategies.judge import parse_ranking, parse_stop


def test_rankings_are_read_leniently() -> None:
    assert parse_ranking("Best: 3, 1", 3) == [2, 0]
    assert parse_ranking("Answer 2 errs.\n**Best**: 1", 3) == [0]
    assert parse_ranking("I prefer candidate 2 over 1", 3) == [1, 0]
    assert parse_ranking("Best: 9", 3) == []
    assert parse_ranking("Best: 2, 2, 5, 1", 3) == [1, 0]
    assert parse_ranking("nothing", 3) == []


def test_stop() -> None:
    assert parse_stop("Best: 1\nStop: yes")
    assert parse_stop("stop: **Yes**")
    assert not parse_stop("Best: 1\nStop: no")
    assert not parse_stop("Best: 1")
