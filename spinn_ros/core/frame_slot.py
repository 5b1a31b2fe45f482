"""A one-frame mailbox between the camera callback and the inference worker.

The camera callback never blocks: ``put`` replaces any frame still waiting (the
newest wins, the replaced one is counted as dropped) and returns at once. Urgent
work (finishing a frame whose offload failed) queues separately, is never dropped
and is taken before new frames.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any


class LatestSlot:
    def __init__(self):
        self._cond = threading.Condition()
        self._item: Any = None
        self._urgent: deque = deque()
        self._closed = False
        self.dropped = 0

    def put(self, item) -> bool:
        """Store ``item``; True when it replaced (dropped) a waiting one."""
        with self._cond:
            replaced = self._item is not None
            self.dropped += replaced
            self._item = item
            self._cond.notify()
            return replaced

    def put_urgent(self, item) -> None:
        with self._cond:
            self._urgent.append(item)
            self._cond.notify()

    def take(self, timeout: float | None = None):
        """Urgent work first, else the waiting frame (removed); None on timeout or close."""
        with self._cond:
            if self._item is None and not self._urgent and not self._closed:
                self._cond.wait(timeout)
            if self._urgent:
                return self._urgent.popleft()
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
