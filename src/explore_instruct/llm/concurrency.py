"""An adaptive bound on LLM calls in flight: halve it on a timeout, grow it back one at a time (AIMD).

A single-slot server (llama.cpp's `python -m llama_cpp.server` by default) queues every request it
cannot serve yet, so under a high fixed concurrency the queued ones hit the client's timeout and are
paid for again. Halving the limit on a timeout lets such a server drain its queue; growing it back by
one after a full window of successes finds the highest concurrency the server keeps up with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)


class AdaptiveLimit:
    """At most `limit` holders at once, with 1 <= limit <= `maximum` (which it starts at)."""

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self.lowest = self.maximum  # the lowest the limit went: what the summary can report
        self._held = 0
        self._streak = 0  # successes since the limit last changed
        # Bumped on every decrease: a burst of timeouts from calls sent before it halves only once.
        self._epoch = 0
        self._warned = False
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Hold one slot; yields the epoch to pass to `timed_out`."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._held < self.limit)
            self._held += 1
        try:
            yield self._epoch
        finally:
            self._held -= 1
            await self._notify()

    async def succeeded(self) -> None:
        if self.limit >= self.maximum:
            return
        self._streak += 1
        if self._streak >= self.limit:
            self.limit += 1
            self._streak = 0
            await self._notify()

    def timed_out(self, epoch: int) -> None:
        """A call sent in `epoch` timed out: halve the limit, once per epoch."""
        self._streak = 0
        if epoch != self._epoch or self.limit <= 1:
            return
        before, self.limit = self.limit, max(1, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        self._epoch += 1
        # Said once: a slow server would otherwise fill the log with the same line.
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log.log(
            level,
            "the LLM server timed out: lowering the calls in flight from %d to %d "
            "(the limit grows back by one after each window of successes)",
            before,
            self.limit,
        )

    async def _notify(self) -> None:
        # The lock is only ever held briefly, so this acquires it without waiting.
        async with self._changed:
            self._changed.notify_all()
