"""Unit tests for serving.batcher.DynamicBatcher.

The model is a stand-in that records every batch it sees and can be held inside a call,
so a test decides exactly which texts are queued when the collector forms a batch.
Timer tests either use a clock the test moves forward by hand, or generous margins;
none asserts how fast anything runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from serving.batcher import (
    BatcherClosedError,
    BatchStats,
    DynamicBatcher,
    QueueFullError,
    RequestTimeoutError,
)

pytestmark = pytest.mark.anyio  # async tests run on asyncio through anyio's pytest plugin

HOLD_LIMIT_S = 5.0  # a held model call never blocks longer than this, even if a test fails


class FakeModel:
    """Answers ``text + "!"`` per text and records every batch.

    ``hold()`` makes each call wait inside the model until ``release()`` lets it through,
    which keeps the worker busy while a test queues texts behind it. A batch containing
    "boom" raises; one containing "short" returns too few results.
    """

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self._holding = False
        self._permits = threading.Semaphore(0)

    def __call__(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        if self._holding:
            self._permits.acquire(timeout=HOLD_LIMIT_S)
        if "boom" in texts:
            raise RuntimeError("model exploded")
        if "short" in texts:
            return [f"{text}!" for text in texts[:-1]]
        return [f"{text}!" for text in texts]

    def hold(self) -> None:
        self._holding = True

    def release(self, calls: int = 1) -> None:
        self._permits.release(calls)

    def release_all(self) -> None:
        self._holding = False
        self._permits.release(100)

    def ran(self, text: str) -> bool:
        return any(text in batch for batch in self.batches)


class SteppedClock:
    """``time.monotonic()`` plus an offset the test advances: time passes instantly."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@asynccontextmanager
async def batcher_for(model: FakeModel, **options) -> AsyncIterator[DynamicBatcher[str]]:
    """A started batcher around ``model``; stopped (and the model let go) afterwards."""
    settings = {"max_batch_size": 8, "max_wait_s": 0.0, "max_queue": 100, **options}
    batcher = DynamicBatcher(model, **settings)
    await batcher.start()
    try:
        yield batcher
    finally:
        model.release_all()
        await batcher.stop(drain_timeout=HOLD_LIMIT_S)


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


async def occupy(batcher: DynamicBatcher[str], model: FakeModel) -> asyncio.Task:
    """Hold the model inside a first batch, so that texts submitted now queue behind it."""
    model.hold()
    calls = len(model.batches)
    task = asyncio.create_task(batcher.submit(["blocker"], timeout=HOLD_LIMIT_S))
    await wait_until(lambda: len(model.batches) > calls)
    return task


async def enqueue(batcher: DynamicBatcher[str], texts: list[str]) -> asyncio.Task:
    """Submit in a background task and return once the texts are queued."""
    depth = batcher.queue_depth
    task = asyncio.create_task(batcher.submit(texts, timeout=HOLD_LIMIT_S))
    await wait_until(lambda: batcher.queue_depth == depth + len(texts))
    return task


async def submit_and_wait_taken(batcher: DynamicBatcher[str], texts: list[str]) -> asyncio.Task:
    """Submit in a background task and return once the collector took the texts."""
    task = asyncio.create_task(batcher.submit(texts, timeout=HOLD_LIMIT_S))
    await asyncio.sleep(0)  # the task runs up to its first await: its texts are queued now
    await wait_until(lambda: batcher.queue_depth == 0)
    return task


# Size limit --------------------------------------------------------------------------


async def test_burst_larger_than_max_batch_size_splits_into_full_batches() -> None:
    model = FakeModel()
    async with batcher_for(model, max_batch_size=4) as batcher:
        blocker = await occupy(batcher, model)
        tasks = [await enqueue(batcher, [f"t{i}"]) for i in range(10)]
        model.release_all()
        await asyncio.gather(blocker, *tasks)
    assert [len(batch) for batch in model.batches] == [1, 4, 4, 2]
    assert model.batches[1] == ["t0", "t1", "t2", "t3"]


async def test_one_large_submission_is_split_and_reassembled_in_order() -> None:
    model = FakeModel()
    texts = [f"t{i}" for i in range(10)]
    async with batcher_for(model, max_batch_size=4) as batcher:
        answer = await batcher.submit(texts, timeout=2.0)
    assert answer.results == [f"{text}!" for text in texts]
    assert [len(batch) for batch in model.batches] == [4, 4, 2]
    assert answer.batch_size == 4


# Wait timer --------------------------------------------------------------------------


async def test_text_within_the_wait_joins_and_a_later_one_goes_to_the_next_batch() -> None:
    model = FakeModel()
    async with batcher_for(model, max_wait_s=0.3) as batcher:
        blocker = await occupy(batcher, model)
        first = [await enqueue(batcher, ["a"]), await enqueue(batcher, ["x"])]
        model.release_all()  # the batch [a, x] now forms; its deadline is 0.3 s after "a"
        await asyncio.sleep(0.1)
        second = asyncio.create_task(batcher.submit(["b"], timeout=2.0))
        await asyncio.sleep(0.5)  # 0.6 s after "a": that batch has closed
        third = await batcher.submit(["c"], timeout=2.0)
        await asyncio.gather(blocker, *first, second)
    assert model.batches[1:] == [["a", "x", "b"], ["c"]]
    assert third.results == ["c!"]


async def test_deadline_is_fixed_by_the_first_text_while_others_trickle_in() -> None:
    """A deadline reset by every arrival would wait another 5 s after the last text; one
    shrunk by subtracting elapsed time twice would close before "d". Neither happens."""
    model = FakeModel()
    clock = SteppedClock()
    stats: list[BatchStats] = []
    async with batcher_for(model, max_wait_s=5.0, clock=clock, on_batch=stats.append) as batcher:
        blocker = await occupy(batcher, model)
        first = await enqueue(batcher, ["a"])
        others = [await enqueue(batcher, ["x"])]
        model.release_all()
        await wait_until(lambda: batcher.queue_depth == 0)  # [a, x] is forming
        # Jump the clock so the texts arrive 1.0, 2.0, 3.0 and 4.9 s after "a".
        for text, step in [("b", 1.0), ("c", 1.0), ("d", 1.0), ("e", 1.9)]:
            clock.advance(step)
            others.append(await submit_and_wait_taken(batcher, [text]))
        # 0.1 s (real) remains until the deadline: the batch closes well within 2 s.
        answer = await asyncio.wait_for(first, timeout=2.0)
        await asyncio.gather(blocker, *others)
    assert model.batches[1] == ["a", "x", "b", "c", "d", "e"]
    assert answer.batch_size == 6
    assert stats[1].queue_waits[0] >= 4.9  # "a" waited (in clock time) until the deadline


async def test_deadline_counts_from_the_first_text_not_from_when_the_batch_forms() -> None:
    """Texts that already waited max_wait_s behind a busy model run at once."""
    model = FakeModel()
    clock = SteppedClock()
    async with batcher_for(model, max_wait_s=5.0, clock=clock) as batcher:
        blocker = await occupy(batcher, model)
        tasks = [await enqueue(batcher, ["a"]), await enqueue(batcher, ["x"])]
        clock.advance(6.0)  # the model was busy for longer than max_wait_s
        model.release_all()
        answers = await asyncio.wait_for(asyncio.gather(*tasks), timeout=1.0)
        await blocker
    assert [answer.results for answer in answers] == [["a!"], ["x!"]]
    assert model.batches[1] == ["a", "x"]


async def test_lone_request_runs_at_once_without_waiting() -> None:
    model = FakeModel()
    stats: list[BatchStats] = []
    async with batcher_for(model, max_wait_s=5.0, on_batch=stats.append) as batcher:
        # A timeout far below max_wait_s: waiting for company would raise RequestTimeoutError.
        single = await batcher.submit(["solo"], timeout=1.0)
        several = await batcher.submit(["one", "two", "three"], timeout=1.0)
    assert single.results == ["solo!"]
    assert single.batch_size == 1
    assert several.results == ["one!", "two!", "three!"]
    assert [stat.size for stat in stats] == [1, 3]


async def test_zero_max_wait_takes_what_is_queued_and_never_waits() -> None:
    model = FakeModel()
    async with batcher_for(model, max_wait_s=0.0) as batcher:
        blocker = await occupy(batcher, model)
        tasks = [await enqueue(batcher, ["a"]), await enqueue(batcher, ["x"])]
        model.release_all()
        await asyncio.wait_for(asyncio.gather(blocker, *tasks), timeout=1.0)
        later = await asyncio.wait_for(batcher.submit(["b"], timeout=1.0), timeout=1.0)
    assert model.batches == [["blocker"], ["a", "x"], ["b"]]
    assert later.results == ["b!"]


class FrozenClock:
    """A clock that never moves: a batcher that waited for its deadline would wait forever."""

    def __call__(self) -> float:
        return 1000.0


async def test_default_policy_is_greedy_and_never_waits_for_company() -> None:
    """No max_wait_s given: texts from several requests that queued up behind a busy model
    run together the moment it is free, although the (frozen) clock never reaches any
    deadline; a text that arrives later rides in the next batch."""
    model = FakeModel()
    batcher = DynamicBatcher(model, max_batch_size=8, max_queue=100, clock=FrozenClock())
    await batcher.start()
    try:
        blocker = await occupy(batcher, model)
        queued = [await enqueue(batcher, ["a"]), await enqueue(batcher, ["x", "y"])]
        model.release_all()
        answers = await asyncio.wait_for(asyncio.gather(blocker, *queued), timeout=HOLD_LIMIT_S)
        later = await asyncio.wait_for(batcher.submit(["b"], timeout=1.0), timeout=HOLD_LIMIT_S)
    finally:
        model.release_all()
        await batcher.stop(drain_timeout=HOLD_LIMIT_S)
    assert model.batches == [["blocker"], ["a", "x", "y"], ["b"]]
    assert [answer.batch_size for answer in answers] == [1, 3, 3]
    assert later.batch_size == 1


async def test_greedy_batches_grow_with_the_queue_up_to_the_size_limit() -> None:
    model = FakeModel()
    async with batcher_for(model, max_batch_size=4) as batcher:
        blocker = await occupy(batcher, model)
        light = await enqueue(batcher, ["l0"])
        model.release(1)  # the blocker ends; the one queued text runs alone, and is held
        await wait_until(lambda: len(model.batches) == 2)
        heavy = [await enqueue(batcher, [f"h{i}"]) for i in range(6)]
        model.release_all()
        await asyncio.gather(blocker, light, *heavy)
    assert [len(batch) for batch in model.batches] == [1, 1, 4, 2]


async def test_stop_does_not_wait_out_the_deadline_of_a_forming_batch() -> None:
    model = FakeModel()
    async with batcher_for(model, max_wait_s=30.0) as batcher:
        blocker = await occupy(batcher, model)
        tasks = [await enqueue(batcher, ["a"]), await enqueue(batcher, ["x"])]
        model.release_all()
        await wait_until(lambda: batcher.queue_depth == 0)  # [a, x] waits for company
        drained = await asyncio.wait_for(batcher.stop(drain_timeout=10.0), timeout=2.0)
        answers = await asyncio.gather(blocker, *tasks)
    assert drained == 2
    assert [answer.results for answer in answers] == [["blocker!"], ["a!"], ["x!"]]


# Ordering ----------------------------------------------------------------------------


async def test_results_go_back_to_the_right_callers_in_input_order() -> None:
    model = FakeModel()
    requests = [[f"r{r}-t{t}" for t in range(1 + r % 4)] for r in range(15)]
    async with batcher_for(model, max_batch_size=7, max_wait_s=0.01) as batcher:
        blocker = await occupy(batcher, model)
        tasks = [await enqueue(batcher, texts) for texts in requests]
        model.release_all()
        answers = await asyncio.gather(*tasks)
        await blocker
    for texts, answer in zip(requests, answers, strict=True):
        assert answer.results == [f"{text}!" for text in texts]
        assert 1 <= answer.batch_size <= 7
    # Requests were really mixed: batches hold several requests, and some request spans two.
    assert all(len(batch) == 7 for batch in model.batches[1:-1])
    assert any(len({text.split("-")[0] for text in batch}) > 1 for batch in model.batches[1:])


# Error isolation ---------------------------------------------------------------------


async def test_a_failing_batch_fails_only_its_own_requests() -> None:
    model = FakeModel()
    stats: list[BatchStats] = []
    async with batcher_for(model, max_batch_size=2, on_batch=stats.append) as batcher:
        blocker = await occupy(batcher, model)
        before = await enqueue(batcher, ["a", "b"])
        failing = await enqueue(batcher, ["boom", "c"])
        after = await enqueue(batcher, ["d"])
        model.release_all()
        assert (await before).results == ["a!", "b!"]
        with pytest.raises(RuntimeError, match="model exploded"):
            await failing
        assert (await after).results == ["d!"]
        assert (await batcher.submit(["e"], timeout=1.0)).results == ["e!"]
        await blocker
    assert [stat.error is not None for stat in stats] == [False, False, True, False, False]


async def test_every_request_sharing_a_failing_batch_gets_the_error() -> None:
    model = FakeModel()
    async with batcher_for(model) as batcher:
        blocker = await occupy(batcher, model)
        one = await enqueue(batcher, ["boom"])
        two = await enqueue(batcher, ["innocent"])
        model.release_all()
        for task in (one, two):
            with pytest.raises(RuntimeError, match="model exploded"):
                await task
        assert (await batcher.submit(["next"], timeout=1.0)).results == ["next!"]
        await blocker


async def test_wrong_number_of_results_fails_that_batch_only() -> None:
    model = FakeModel()
    stats: list[BatchStats] = []
    async with batcher_for(model, on_batch=stats.append) as batcher:
        blocker = await occupy(batcher, model)
        one = await enqueue(batcher, ["short"])
        two = await enqueue(batcher, ["other"])
        model.release_all()
        for task in (one, two):
            with pytest.raises(ValueError, match="1 results for a batch of 2 texts"):
                await task
        assert (await batcher.submit(["next"], timeout=1.0)).results == ["next!"]
        await blocker
    assert isinstance(stats[1].error, ValueError)


# Cancellation and timeouts -----------------------------------------------------------


async def test_timed_out_or_cancelled_callers_are_never_run() -> None:
    model = FakeModel()
    async with batcher_for(model) as batcher:
        blocker = await occupy(batcher, model)
        # Dead texts both at the head of the queue and between live ones.
        with pytest.raises(RequestTimeoutError):
            await batcher.submit(["late"], timeout=0.05)
        first = await enqueue(batcher, ["first"])
        gone = await enqueue(batcher, ["gone"])
        gone.cancel()
        kept = await enqueue(batcher, ["kept"])
        model.release_all()
        assert (await first).results == ["first!"]
        assert (await kept).results == ["kept!"]
        with pytest.raises(asyncio.CancelledError):
            await gone
        await blocker
        assert batcher.queue_depth == 0
    assert model.batches == [["blocker"], ["first", "kept"]]


async def test_a_caller_cancelled_while_its_batch_runs_does_not_break_the_others() -> None:
    model = FakeModel()
    async with batcher_for(model) as batcher:
        blocker = await occupy(batcher, model)
        leaving = await enqueue(batcher, ["x"])
        staying = await enqueue(batcher, ["y"])
        model.release(1)  # the blocker finishes; [x, y] enters the model and is held there
        await wait_until(lambda: len(model.batches) == 2)
        leaving.cancel()
        model.release_all()
        assert (await staying).results == ["y!"]
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert (await batcher.submit(["after"], timeout=1.0)).results == ["after!"]
        await blocker
    assert model.batches[1] == ["x", "y"]


async def test_request_timeout_while_waiting_for_a_busy_model() -> None:
    model = FakeModel()
    async with batcher_for(model) as batcher:
        blocker = await occupy(batcher, model)
        with pytest.raises(RequestTimeoutError, match=r"0\.05 s"):
            await batcher.submit(["a", "b"], timeout=0.05)
        assert batcher.queue_depth == 2  # their slots are freed when the collector skips them
        model.release_all()
        await blocker
        await wait_until(lambda: batcher.queue_depth == 0)
    assert model.batches == [["blocker"]]


# Back-pressure -----------------------------------------------------------------------


async def test_queue_full_is_refused_at_once_and_all_or_nothing() -> None:
    model = FakeModel()
    async with batcher_for(model, max_queue=3) as batcher:
        blocker = await occupy(batcher, model)
        queued = await enqueue(batcher, ["a", "b"])
        with pytest.raises(QueueFullError, match="2 of 3"):
            await asyncio.wait_for(batcher.submit(["c", "d"], timeout=5.0), timeout=1.0)
        assert batcher.queue_depth == 2  # nothing of the refused request was queued
        last = await enqueue(batcher, ["e"])
        with pytest.raises(QueueFullError):
            await asyncio.wait_for(batcher.submit(["f"], timeout=5.0), timeout=1.0)
        model.release_all()
        await asyncio.gather(blocker, queued, last)
        # Too large on its own, even with the queue empty.
        with pytest.raises(QueueFullError):
            await batcher.submit(["g", "h", "i", "j"], timeout=1.0)
    assert not any(model.ran(text) for text in "cdfghij")


# Shutdown ----------------------------------------------------------------------------


async def test_stop_refuses_new_texts_and_answers_every_accepted_one() -> None:
    model = FakeModel()
    async with batcher_for(model) as batcher:
        blocker = await occupy(batcher, model)
        one = await enqueue(batcher, ["a"])
        two = await enqueue(batcher, ["b", "c"])
        stopping = asyncio.create_task(batcher.stop(drain_timeout=5.0))
        await wait_until(lambda: not batcher.running)
        with pytest.raises(BatcherClosedError):
            await batcher.submit(["late"], timeout=1.0)
        model.release_all()
        assert await stopping == 4  # the running blocker and the three queued texts
        assert (await blocker).results == ["blocker!"]
        assert (await one).results == ["a!"]
        assert (await two).results == ["b!", "c!"]
        assert await batcher.stop() == 0  # a second stop has nothing left to do
    assert not model.ran("late")


async def test_stop_gives_up_on_a_hung_model_after_the_drain_timeout() -> None:
    model = FakeModel()
    async with batcher_for(model) as batcher:
        blocker = await occupy(batcher, model)
        queued = await enqueue(batcher, ["a"])
        assert await batcher.stop(drain_timeout=0.1) == 0
        for task in (blocker, queued):
            with pytest.raises(BatcherClosedError):
                await task


async def test_submit_before_start_is_refused() -> None:
    batcher = DynamicBatcher(FakeModel(), max_batch_size=2, max_wait_s=0.0, max_queue=2)
    assert not batcher.running
    with pytest.raises(BatcherClosedError):
        await batcher.submit(["a"], timeout=1.0)
    assert await batcher.stop() == 0


# Stats, depth and arguments ----------------------------------------------------------


async def test_on_batch_reports_size_waits_and_duration() -> None:
    model = FakeModel()
    stats: list[BatchStats] = []
    async with batcher_for(model, on_batch=stats.append) as batcher:
        blocker = await occupy(batcher, model)
        tasks = [await enqueue(batcher, ["a", "b"]), await enqueue(batcher, ["c"])]
        assert batcher.queue_depth == 3
        model.release_all()
        await asyncio.gather(blocker, *tasks)
        assert batcher.queue_depth == 0
    assert [stat.size for stat in stats] == [1, 3]
    for stat in stats:
        assert len(stat.queue_waits) == stat.size
        assert all(wait >= 0 for wait in stat.queue_waits)
        assert stat.duration >= 0
        assert stat.error is None


async def test_a_failing_on_batch_callback_is_logged_and_serving_continues(caplog) -> None:
    def broken(stats: BatchStats) -> None:
        raise RuntimeError("metrics backend down")

    model = FakeModel()
    with caplog.at_level(logging.ERROR, logger="serving.batcher"):
        async with batcher_for(model, on_batch=broken) as batcher:
            assert (await batcher.submit(["a"], timeout=1.0)).results == ["a!"]
            assert (await batcher.submit(["b"], timeout=1.0)).results == ["b!"]
    assert "on_batch callback failed" in caplog.text


@pytest.mark.parametrize(
    ("option", "value"), [("max_batch_size", 0), ("max_wait_s", -0.1), ("max_queue", 0)]
)
def test_bad_settings_are_refused(option: str, value: float) -> None:
    settings = {"max_batch_size": 4, "max_wait_s": 0.01, "max_queue": 8, option: value}
    with pytest.raises(ValueError, match=option):
        DynamicBatcher(FakeModel(), **settings)


async def test_empty_submission_is_refused() -> None:
    async with batcher_for(FakeModel()) as batcher:
        with pytest.raises(ValueError, match="at least one text"):
            await batcher.submit([], timeout=1.0)
