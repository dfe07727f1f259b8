"""Background tasks that are never lost: kept, logged when they fail, stopped.

asyncio keeps only a weak reference to a task, so a task nobody holds can be
collected mid-run, and an exception nobody awaits is reported late or never.
Every background task in tagproxy is started through a TaskSet, which holds
it until it ends, logs its failure with the task's name, and cancels what is
still running when the owner stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskSet:
    """The background tasks of one owner (the delivery worker, the proxy)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "%s: background task %s failed",
                self.owner,
                task.get_name(),
                exc_info=exc,
            )

    async def wait(self, seconds: float) -> bool:
        """Wait for running tasks to end by themselves; True if they all did."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=max(seconds, 0))
        return not pending

    async def cancel(self) -> None:
        """Cancel what is still running and wait until it has ended."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
