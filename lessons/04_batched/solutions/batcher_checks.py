"""Exercises 3 and 4 of lesson 4, checked on the batcher itself with a fake model.

A fake model that a check can hold inside a call keeps the worker busy, so the check decides
exactly what is queued. No HTTP, no real model: each check runs in milliseconds.

Run from the repository root:
    .venv/bin/python lessons/04_batched/solutions/batcher_checks.py
"""

from __future__ import annotations

import asyncio
import threading

from serving.batcher import DynamicBatcher, QueueFullError, RequestTimeoutError
from serving.settings import SettingsError, load_settings


class HeldModel:
    """Answers ``text.upper()`` and records every batch; ``hold()`` keeps the next call busy
    until ``release()``."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        self.gate.wait(timeout=5)  # never hang a check for long, even if it fails
        return [text.upper() for text in texts]

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def ran(self, text: str) -> bool:
        return any(text in batch for batch in self.batches)


async def _busy(batcher: DynamicBatcher, model: HeldModel) -> asyncio.Task:
    """Hold the model inside a first batch, so that what is submitted next waits in the queue."""
    model.hold()
    task = asyncio.create_task(batcher.submit(["blocker"], timeout=5))
    while not model.batches:
        await asyncio.sleep(0.001)
    return task


async def timeout_is_dropped() -> dict:
    """Exercise 3: a caller that times out gets RequestTimeoutError (504), and its texts are
    dropped before they reach the model."""
    model = HeldModel()
    batcher = DynamicBatcher(model, max_batch_size=32, max_queue=256)
    await batcher.start()
    try:
        blocker = await _busy(batcher, model)
        try:
            await batcher.submit(["late one", "late two"], timeout=0.05)
            timed_out = False
        except RequestTimeoutError:
            timed_out = True
        model.release()
        await blocker
        answered = await batcher.submit(["after"], timeout=5)  # the batcher goes on serving
        return {
            "timed_out": timed_out,
            "late_texts_ran": model.ran("late one") or model.ran("late two"),
            "dropped_texts": batcher.dropped_texts,
            "batches": model.batches,
            "after": answered.results,
        }
    finally:
        model.release()
        await batcher.stop()


async def all_or_nothing() -> dict:
    """Exercise 4: with MAX_QUEUE=64 and 64 texts queued, any further text is refused at once
    (503 queue_full), however small the request; the queued ones are still answered."""
    model = HeldModel()
    batcher = DynamicBatcher(model, max_batch_size=32, max_queue=64)
    await batcher.start()
    try:
        blocker = await _busy(batcher, model)
        full = asyncio.create_task(batcher.submit([f"t{i}" for i in range(64)], timeout=5))
        while batcher.queue_depth < 64:
            await asyncio.sleep(0.001)
        refused = {}
        for size in (1, 64):
            try:
                await batcher.submit(["x"] * size, timeout=5)
                refused[size] = False
            except QueueFullError:
                refused[size] = True
        model.release()
        await blocker
        answered = await full
        return {"refused": refused, "queued_answered": len(answered.results)}
    finally:
        model.release()
        await batcher.stop()


def small_queue_is_refused_at_start_up() -> str:
    """Exercise 4: INFERENCE_MAX_QUEUE=32 with the default MAX_BATCH_ITEMS=64 stops start-up."""
    try:
        load_settings(max_queue=32)
    except SettingsError as e:
        return str(e)
    return ""


def main() -> None:
    print("exercise 3:", asyncio.run(timeout_is_dropped()))
    print("exercise 4:", asyncio.run(all_or_nothing()))
    print("exercise 4, start-up:", small_queue_is_refused_at_start_up())


if __name__ == "__main__":
    main()
