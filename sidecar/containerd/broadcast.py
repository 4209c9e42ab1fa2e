"""Fan-out of index changes to any number of subscribers, never blocking the publisher.

A subscriber that falls too far behind loses its stream (it is closed) rather than stall containerd event
handling; it then resubscribes and reads `Store.keys()` afresh.
"""

from __future__ import annotations

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sidecar.containerd.store import KeyChange

SUBSCRIBER_BUFFER = 1024


class ChangeBroadcast:
    def __init__(self) -> None:
        self._subscribers: list[MemoryObjectSendStream[KeyChange]] = []

    def subscribe(self) -> MemoryObjectReceiveStream[KeyChange]:
        send, receive = anyio.create_memory_object_stream[KeyChange](SUBSCRIBER_BUFFER)
        self._subscribers.append(send)
        return receive

    def publish(self, change: KeyChange) -> None:
        if not change:
            return
        alive = []
        for send in self._subscribers:
            try:
                send.send_nowait(change)
                alive.append(send)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                send.close()
        self._subscribers = alive

    def close(self) -> None:
        for send in self._subscribers:
            send.close()
        self._subscribers = []
