"""Admission of Detect calls: how many may be in the server, and which may run.

gRPC's own ``maximum_concurrent_rpcs`` counts every call, so a server busy with detection
would refuse its health checks. Here only Detect is counted:
- at most ``limit`` calls are in the server, running or waiting; one more is refused at
  once (RESOURCE_EXHAUSTED, so that clients back off instead of piling up);
- at most ``running`` run at once, and together they may take at most ``memory`` bytes of
  estimated peak memory (:mod:`detector.budget`): a call that would pass it waits until
  others finish, so the server's memory is bounded in total, not only per call. A call
  alone always runs; the budget already bounds it.
- waiting calls start in arrival order, and give up at their deadline or when the client
  goes away (their coroutine is cancelled).

Everything here runs on the server's event loop: no locks.
"""
import asyncio
import collections


class Busy(Exception):
    """The server already holds its limit of Detect calls."""


class Admission:
    def __init__(self, running, limit, memory):
        if running < 1 or limit < running or memory <= 0:
            raise ValueError(f"need 1 <= running <= limit and memory > 0, got running={running}, "
                             f"limit={limit}, memory={memory}")
        self.running, self.limit, self.memory = running, limit, memory
        self.inside = 0  # calls admitted: running or waiting
        self.active = 0  # calls running
        self.used = 0  # estimated bytes of the running calls
        self._queue = collections.deque()  # (future, bytes) of the waiting calls, oldest first

    def enter(self):
        """Count a call in, or raise :class:`Busy`; :meth:`leave` counts it out."""
        if self.inside >= self.limit:
            raise Busy(f"the server is busy: {self.inside} detection calls are running or queued, "
                       f"its limit is {self.limit}; retry with backoff")
        self.inside += 1

    def leave(self):
        self.inside -= 1

    def _fits(self, nbytes):
        return self.active < self.running and (self.active == 0 or self.used + nbytes <= self.memory)

    def _take(self, nbytes):
        self.active += 1
        self.used += nbytes

    async def acquire(self, nbytes, timeout=None):
        """Wait, in arrival order, until a call of ``nbytes`` may run; ``asyncio.TimeoutError``
        after ``timeout`` seconds. :meth:`release` gives the place back."""
        if not self._queue and self._fits(nbytes):
            self._take(nbytes)
            return
        ticket = asyncio.get_running_loop().create_future()
        entry = (ticket, nbytes)
        self._queue.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(ticket), timeout)
        except BaseException:
            if ticket.done() and not ticket.cancelled():  # granted just as we gave up
                self.release(nbytes)
            else:
                ticket.cancel()
                self._queue.remove(entry)
                self._wake()  # the head may have left: the next one may fit
            raise

    def release(self, nbytes):
        self.active -= 1
        self.used -= nbytes
        self._wake()

    def _wake(self):
        while self._queue and self._fits(self._queue[0][1]):
            ticket, nbytes = self._queue.popleft()
            self._take(nbytes)
            ticket.set_result(None)
