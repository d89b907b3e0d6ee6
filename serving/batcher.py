"""Dynamic batching: many concurrent requests, one model call.

A TF-IDF + logistic regression pipeline scores 32 texts almost as fast as one, so calling
the model once per request wastes most of its time. ``DynamicBatcher`` puts every submitted
text on a bounded asyncio queue, and a single collector task turns the queue into batches:

1. Wait for the first text of the next batch, then take every text already queued
   (up to ``max_batch_size``).
2. Greedy (the default, ``max_wait_s=0``): run that batch now. The model thread takes
   whatever queued up while it was busy, so batches grow with the load by themselves and a
   lightly loaded server never waits.
   With a window (``max_wait_s > 0``, opt-in): if those texts all come from one request,
   the server is idle: run the batch at once, so a lone request is never delayed. Otherwise
   wait for more texts until the batch is full or its deadline passes. The deadline is fixed
   once per batch, ``first text's enqueue time + max_wait_s``, and every wait is recomputed
   as ``deadline - now`` (never from the previous wait, which makes the deadline drift).
3. Run the model in a dedicated worker thread, so the event loop keeps accepting requests
   meanwhile; they queue up and form the next batch. Then hand each result to the future
   of the text it belongs to.

Back-pressure: a request whose texts do not fit in the queue is refused at once
(``QueueFullError``). A caller that waits longer than its timeout gets
``RequestTimeoutError``, and its texts that have not run yet are dropped before they reach
the model. A failing batch fails only its own requests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

R = TypeVar("R")


class QueueFullError(Exception):
    """The texts do not fit in the queue right now: the server is overloaded."""


class BatcherClosedError(Exception):
    """The batcher takes no new texts: it is not started yet, or it is shutting down."""


class RequestTimeoutError(Exception):
    """The caller waited longer than its timeout; its texts that had not run are dropped."""


@dataclass
class BatchStats:
    """What happened in one batch, passed to the ``on_batch`` callback."""

    size: int  # texts in the batch
    queue_waits: list[float]  # seconds each text waited in the queue before the batch ran
    duration: float  # seconds the predict call took
    error: BaseException | None  # what predict raised, or None


@dataclass
class Submission(Generic[R]):
    """The answer to one ``submit()`` call."""

    results: list[R]  # one per submitted text, input order
    batch_size: int  # size of the largest batch these texts rode in (for logs)


@dataclass(eq=False)
class _Item:
    """One queued text and the future its caller awaits: it resolves to (result, batch size)."""

    text: str
    owner: int  # which submit() call the text came from
    enqueued_at: float
    future: asyncio.Future[tuple[Any, int]]
    expires_at: float = float("inf")  # loop time of its caller's timeout: then nobody waits


class DynamicBatcher(Generic[R]):
    """Groups texts from concurrent callers into batches for one ``predict`` call each.

    ``predict`` takes a list of texts and returns one result per text, in order. It runs
    in a single worker thread, one batch at a time.
    """

    drain_timed_out = False  # set by stop(): some accepted texts were never answered

    def __init__(
        self,
        predict: Callable[[list[str]], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_s: float = 0.0,
        max_queue: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        on_drop: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, got {max_wait_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self._predict = predict
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue
        self._on_batch = on_batch
        # Told the queue depth at every change: a gauge set this way is right in every worker
        # process, where a callback read at scrape time reaches only the worker scraped.
        self._on_queue_depth = on_queue_depth
        self._on_drop = on_drop
        self._clock = clock
        # The bound is enforced by submit() for a whole request at once (all-or-nothing).
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._arrived = asyncio.Event()  # set by submit(): wakes a collector waiting for more
        self._owners = itertools.count()
        self._batch: list[_Item] = []  # the batch being formed or run
        self._answered = 0  # texts answered by the collector (results or batch errors)
        self.dropped_texts = 0  # skipped at take time: their callers timed out or went away
        self._collector: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    @property
    def queue_depth(self) -> int:
        """Texts waiting in the queue (not yet taken into a batch)."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        """True while the batcher accepts texts: started, not stopping."""
        return self._collector is not None and not self._collector.done() and not self._closing

    async def start(self) -> None:
        """Start the worker thread and the collector task (call once, inside the event loop)."""
        if self._collector is not None or self._closing:
            raise RuntimeError("a DynamicBatcher can be started only once")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher-model")
        self._collector = asyncio.create_task(self._collect(), name="batcher-collector")

    async def submit(self, texts: list[str], timeout: float) -> Submission[R]:
        """Queue ``texts`` and wait (at most ``timeout`` seconds) for their results.

        Raises QueueFullError at once if the texts do not all fit in the queue,
        BatcherClosedError if the batcher is not running, RequestTimeoutError after
        ``timeout``, and whatever ``predict`` raised if a batch holding these texts failed.
        """
        if not texts:
            raise ValueError("submit() needs at least one text")
        if not self.running:
            raise BatcherClosedError("the batcher is not running (not started or shutting down)")
        if self.queue_depth + len(texts) > self._max_queue:
            raise QueueFullError(
                f"{len(texts)} text(s) do not fit: {self.queue_depth} of "
                f"{self._max_queue} queue slots in use"
            )
        loop = asyncio.get_running_loop()
        owner = next(self._owners)
        now = self._clock()
        expires_at = loop.time() + timeout  # the clock asyncio.wait times the caller with
        futures: list[asyncio.Future[tuple[Any, int]]] = []
        for text in texts:
            item = _Item(text, owner, now, loop.create_future(), expires_at)
            self._queue.put_nowait(item)  # cannot fail: checked above, nothing awaited since
            futures.append(item.future)
        self._arrived.set()
        self._depth_changed()

        try:
            done, pending = await asyncio.wait(
                futures, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION
            )
        finally:
            # Timeout, failure or a cancelled caller: this request's texts that have not
            # run yet are dropped (the collector skips texts whose future is done).
            for future in futures:
                future.cancel()
        errors = [future.exception() for future in done]
        for error in errors:
            if error is not None:
                raise error
        if pending:
            raise RequestTimeoutError(f"no result within {timeout:g} s")
        outcomes = [future.result() for future in futures]
        return Submission(
            results=[result for result, _ in outcomes],
            batch_size=max(size for _, size in outcomes),
        )

    async def stop(self, drain_timeout: float = 10.0) -> int:
        """Refuse new texts, answer every text already accepted, stop the worker.

        Returns how many texts were answered while draining. Texts still unanswered after
        ``drain_timeout`` seconds (a hung model) get BatcherClosedError instead.
        A second call returns 0 at once.
        """
        if self._closing or self._collector is None:
            self._closing = True
            return 0
        self._closing = True
        self._arrived.set()  # a batch waiting for company stops waiting: nobody else can come
        answered_before = self._answered
        try:
            await asyncio.wait_for(self._queue.join(), drain_timeout)
        except asyncio.TimeoutError:
            self.drain_timed_out = True
            logger.warning("batcher drain timed out after %g s", drain_timeout)
        drained = self._answered - answered_before

        self._collector.cancel()
        await asyncio.wait([self._collector])
        leftovers = list(self._batch)
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for item in leftovers:
            if not item.future.done():
                item.future.set_exception(BatcherClosedError("shut down before this text ran"))
        assert self._executor is not None
        # Do not wait for a hung predict call: its results have nowhere to go anymore.
        self._executor.shutdown(wait=False, cancel_futures=True)
        return drained

    # The collector ---------------------------------------------------------------------

    async def _collect(self) -> None:
        """Form a batch, run it, repeat: the only task that takes texts off the queue."""
        while True:
            batch = await self._form_batch()
            await self._run(batch)

    async def _form_batch(self) -> list[_Item]:
        """Wait for a first text, take what is queued; with a window, gather more until the
        batch is full or due."""
        first = await self._queue.get()
        while self._expired(first):  # its caller already gave up: skip it
            self._queue.task_done()
            first = await self._queue.get()
        batch = self._batch = [first]
        deadline = first.enqueued_at + self._max_wait_s  # fixed for this batch
        self._take_queued(batch)
        if self._max_wait_s == 0:
            return batch  # greedy: what queued up while the model was busy, no waiting
        if len({item.owner for item in batch}) == 1:
            return batch  # a lone request: the server is idle, do not wait for company
        while len(batch) < self._max_batch_size and not self._closing:
            remaining = deadline - self._clock()  # always from the deadline
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
            self._take_queued(batch)
        return batch

    def _take_queued(self, batch: list[_Item]) -> None:
        """Move texts already queued into ``batch`` (up to the size limit), skipping dead ones."""
        while len(batch) < self._max_batch_size and not self._queue.empty():
            item = self._queue.get_nowait()
            if self._expired(item):
                self._queue.task_done()
            else:
                batch.append(item)
        self._depth_changed()

    def _depth_changed(self) -> None:
        if self._on_queue_depth is not None:
            self._on_queue_depth(self._queue.qsize())

    def _expired(self, item: _Item) -> bool:
        """Whether nobody waits for ``item`` anymore: its caller went away, or its timeout has
        passed (under load the caller's own timer may not have fired yet). Counted."""
        if item.future.done() or item.expires_at <= asyncio.get_running_loop().time():
            self.dropped_texts += 1
            if self._on_drop is not None:
                self._on_drop()
            return True
        return False

    async def _run(self, batch: list[_Item]) -> None:
        """Run ``predict`` on the batch in the worker thread and answer every caller."""
        texts = [item.text for item in batch]
        started = self._clock()
        queue_waits = [started - item.enqueued_at for item in batch]
        error: Exception | None = None
        results: list[R] = []
        try:
            loop = asyncio.get_running_loop()
            results = list(await loop.run_in_executor(self._executor, self._predict, texts))
            if len(results) != len(texts):
                raise ValueError(
                    f"predict returned {len(results)} results for a batch of {len(texts)} texts"
                )
        except Exception as exc:  # the model's failure belongs to this batch's callers only
            error = exc
        duration = self._clock() - started

        for index, item in enumerate(batch):
            if not item.future.done():  # the caller may have given up while the batch ran
                if error is None:
                    item.future.set_result((results[index], len(batch)))
                else:
                    item.future.set_exception(error)
                self._answered += 1
            self._queue.task_done()
        self._batch = []
        self._report(BatchStats(len(batch), queue_waits, duration, error))

    def _report(self, stats: BatchStats) -> None:
        """Pass stats to on_batch; a failing callback must not stop the collector."""
        if self._on_batch is None:
            return
        try:
            self._on_batch(stats)
        except Exception:
            logger.exception("on_batch callback failed")
