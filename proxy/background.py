"""Background tasks, created in one place that keeps them and logs failures.

asyncio keeps only weak references to tasks, so a task nobody holds can be
collected mid-flight; and an exception in a task nobody awaits is reported
only when the task is garbage-collected, if at all. `spawn` is that one
place; a TaskSet groups an owner's tasks so the owner can wait for them or
cancel them when it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    """Run `coro` in the background; its failure is logged, never lost."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)


class TaskSet:
    """The background tasks of one owner (the delivery worker, the spool)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = spawn(coro, f"{self.owner}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
