"""Admission of Detect calls: at most ``running`` at once, at most ``limit`` in the server.

gRPC's own ``maximum_concurrent_rpcs`` counts every call, so a server busy with detection
would refuse its health checks. Here only Detect is counted: a call past ``limit`` is
refused at once (RESOURCE_EXHAUSTED, so clients back off instead of piling up), the others
wait in arrival order for one of the ``running`` slots, giving up when their deadline
passes or the client goes away. Health checks, reflection and GetModelInfo never wait here.
"""
import threading
import time
from contextlib import contextmanager


class Busy(Exception):
    """The server already holds its limit of Detect calls."""


class Admission:
    def __init__(self, running, limit):
        if running < 1 or limit < running:
            raise ValueError(f"need 1 <= running <= limit, got running={running}, limit={limit}")
        self.running, self.limit = running, limit
        self._lock = threading.Condition()
        self._inside = 0  # calls admitted: running or waiting
        self._active = 0  # calls running
        self._queue = []  # tickets of the waiting calls, oldest first

    @property
    def inside(self):
        with self._lock:
            return self._inside

    @contextmanager
    def enter(self):
        """Count the call in, or raise :class:`Busy`."""
        with self._lock:
            if self._inside >= self.limit:
                raise Busy(f"the server is busy: {self._inside} detection calls are running or queued, "
                           f"its limit is {self.limit}; retry with backoff")
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1

    @contextmanager
    def slot(self, check, poll=0.05):
        """Wait for a running slot, in arrival order; ``check()`` runs every ``poll`` seconds
        while waiting and may raise to give up (an expired deadline, a cancelled call).
        Returns the seconds waited through the context value."""
        ticket, start = object(), time.perf_counter()
        with self._lock:
            self._queue.append(ticket)
            try:
                while self._active >= self.running or self._queue[0] is not ticket:
                    self._lock.release()
                    try:
                        check()
                    finally:
                        self._lock.acquire()
                    self._lock.wait(poll)
            except BaseException:
                self._queue.remove(ticket)
                self._lock.notify_all()
                raise
            self._queue.pop(0)
            self._active += 1
            self._lock.notify_all()
        try:
            yield time.perf_counter() - start
        finally:
            with self._lock:
                self._active -= 1
                self._lock.notify_all()
