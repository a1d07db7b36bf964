"""A subscriber's queue at stop, without the kernel: what the reader took is
never handed out again."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest

from bpfcap import EventType
from bpfcap.manager import _Subscriber


class _Manager:
    def _unsubscribe(self, sub: Any) -> None:
        pass


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_a_batch_is_handed_out_once_when_the_stop_cancels_its_wait_for_room() -> None:
    sub: _Subscriber[Any] = _Subscriber(_Manager(), frozenset({EventType.FILE_WRITE}), 1, "block", "s")  # type: ignore[arg-type]
    first, second = ["first"], ["second"]
    await sub._put(first)  # (fills the queue)
    scope = anyio.CancelScope()

    async def put() -> None:
        with scope:
            await sub._put(second)

    async with anyio.create_task_group() as tg:
        tg.start_soon(put)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()  # the stop...
        taken = [sub._recv.receive_nowait()]  # ...and the reader, before the putter runs again
        with contextlib.suppress(anyio.WouldBlock):
            taken.append(sub._recv.receive_nowait())
    handed_out_at_stop = [sub._unsent] if sub._unsent is not None else []
    assert taken + handed_out_at_stop == [first, second]
    _close(sub)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_a_batch_whose_send_the_stop_cancelled_is_kept_for_the_last_drain() -> None:
    sub: _Subscriber[Any] = _Subscriber(_Manager(), frozenset({EventType.FILE_WRITE}), 1, "block", "s")  # type: ignore[arg-type]
    await sub._put(["first"])
    with anyio.move_on_after(0.05):
        await sub._put(["second"])
    assert sub._unsent == ["second"] and sub.delivered == 1
    _close(sub)


def _close(sub: _Subscriber[Any]) -> None:
    sub._close_stream()
    sub._recv.close()
