"""At most N requests start per turn of the event loop; the rest wait, in order."""

import asyncio

from aserve.http1 import _Turns


def test_requests_beyond_a_turns_budget_start_in_later_turns_in_order() -> None:
    async def main() -> list[list[int]]:
        turns, started, per_turn = _Turns(2), [], []
        for i in range(5):
            turns.start(lambda i=i: started.append(i))
        per_turn.append(list(started))
        for _ in range(3):
            await asyncio.sleep(0)  # one turn of the loop
            per_turn.append(list(started))
        return per_turn

    assert asyncio.run(main()) == [[0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
