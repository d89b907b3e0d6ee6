"""Exercise 5 of lesson 4: greedy batching against a window, for a model with a fixed cost.

The fake model sleeps ``cost_ms`` per call whatever the batch size (a stand-in for a GPU or a
remote model, where one call costs the same for 1 text or 32). Eight callers each send one
text, wait for the answer, pause a little (a client's own work and the network), and go again.
The sleep uses no CPU, so the figures barely depend on the machine.

Run from the repository root:
    .venv/bin/python lessons/04_batched/solutions/fixed_cost.py
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

from serving.batcher import DynamicBatcher


def sleeping_model(cost_ms: float):
    def predict(texts: list[str]) -> list[int]:
        time.sleep(cost_ms / 1000)  # the same for one text or 32
        return [len(text) for text in texts]

    return predict


async def drive(
    wait_ms: float, *, cost_ms: float = 20.0, callers: int = 8, seconds: float = 1.0
) -> dict:
    """Run ``callers`` closed-loop callers for ``seconds`` against one batcher."""
    sizes: list[int] = []
    batcher = DynamicBatcher(
        sleeping_model(cost_ms),
        max_batch_size=32,
        max_wait_s=wait_ms / 1000,
        max_queue=256,
        on_batch=lambda stats: sizes.append(stats.size),
    )
    await batcher.start()
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def caller(seed: int) -> None:
        pause = random.Random(seed)
        while time.monotonic() < stop_at:
            await asyncio.sleep(pause.uniform(0, 0.004))  # the client's own time, 0-4 ms
            started = time.monotonic()
            await batcher.submit(["a text"], timeout=5)
            latencies.append((time.monotonic() - started) * 1000)

    await asyncio.gather(*(caller(i) for i in range(callers)))
    await batcher.stop()
    return {
        "wait_ms": wait_ms,
        "calls": len(sizes),
        "mean_batch": round(statistics.fmean(sizes), 2),
        "answers": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
    }


def main(seconds: float = 1.0, cost_ms: float = 20.0) -> list[dict]:
    results = [asyncio.run(drive(w, cost_ms=cost_ms, seconds=seconds)) for w in (0, 5, 40)]
    for r in results:
        print(
            f"wait {r['wait_ms']:>2} ms: {r['calls']:3} model calls, {r['mean_batch']:5.2f} "
            f"texts per call, {r['answers']:4} answers, p50 {r['p50_ms']:5.1f} ms"
        )
    return results


if __name__ == "__main__":
    main()
