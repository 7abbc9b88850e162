"""A spaced host's turns in one worker (worker/turns.py): one request of a host at a time, the pages of a host
waiting in line without asking the store, other hosts unaffected, a host held elsewhere asked again."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from kubecrawl.worker.turns import HostTurns
from tests.support.fakes import FakeHosts

HOLD = timedelta(seconds=30)


async def test_pages_of_one_host_take_turns_and_another_host_does_not_wait() -> None:
    hosts = FakeHosts()
    turns = HostTurns(hosts)
    answer = asyncio.Event()

    async def request(host: str, *, wait_for_answer: bool) -> None:
        async with turns.turn("c1", host, 0.01, hold=HOLD):
            if wait_for_answer:
                await answer.wait()

    first = asyncio.create_task(request("a.test", wait_for_answer=True))
    second = asyncio.create_task(request("a.test", wait_for_answer=False))
    other = asyncio.create_task(request("b.test", wait_for_answer=False))
    await other
    # The second page of a.test has not even asked while the first holds the host; b.test went meanwhile.
    assert hosts.turns == [("take", "a.test"), ("take", "b.test"), ("release", "b.test")]
    answer.set()
    await asyncio.gather(first, second)
    assert hosts.turns[3:] == [("release", "a.test"), ("take", "a.test"), ("release", "a.test")]


async def test_a_host_held_by_another_worker_is_asked_again_until_its_turn() -> None:
    hosts = FakeHosts(busy=2)
    async with HostTurns(hosts).turn("c1", "a.test", 0.01, hold=HOLD):
        pass
    assert hosts.turns == [("busy", "a.test"), ("busy", "a.test"), ("take", "a.test"), ("release", "a.test")]


async def test_an_unspaced_host_takes_no_turn() -> None:
    hosts = FakeHosts(busy=1)
    async with HostTurns(hosts).turn("c1", "a.test", 0.0, hold=HOLD):
        pass
    assert hosts.turns == []
