"""The pipeline's per-process memo keeps at most its size, forgetting the oldest entry first."""

from __future__ import annotations

from kubecrawl.worker.memo import Memo


def test_a_memo_never_holds_more_than_its_size_and_forgets_the_oldest_first() -> None:
    memo = Memo[str, int](3)
    for index in range(10):
        memo.put(f"host-{index}", index)
    assert len(memo) == 3
    assert [memo.get(f"host-{index}") for index in range(6, 10)] == [None, 7, 8, 9]


def test_storing_a_key_again_makes_it_the_newest() -> None:
    memo = Memo[str, int](2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("a", 3)
    memo.put("c", 4)
    assert (memo.get("a"), memo.get("b"), memo.get("c")) == (3, None, 4)
