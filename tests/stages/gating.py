"""Helpers shared by the in-process tests of the batched stage and later (test_stage_batched,
test_hostile_bodies): ``stages_from``, a gated model, scenarios in one event loop.

A model held at a gate, and scenarios run in one event loop (httpx.ASGITransport), so requests
in flight at the same time are deterministic: no sleeps decide an outcome. Imported as
``from gating import ...``: pytest's default "prepend" import mode puts tests/stages (no
``__init__.py``) on ``sys.path``, as it does tests/e2e for ``loadgen``. The ``client`` fixture
they share is in tests/stages/conftest.py (a fixture imported from a module is flagged F811).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httpx
from fastapi import FastAPI

from sentiment_model import load_model
from serving.stages import STAGES


def stages_from(first: str) -> list[str]:
    """``first`` and every later stage: those that have what ``first`` introduced."""
    names = list(STAGES)
    return names[names.index(first) :]


def metric(app: FastAPI, name: str, **labels: str) -> float:
    """A sample's current value (0 when it does not exist yet)."""
    return app.state.metrics.registry.get_sample_value(name, labels) or 0.0


class GatedModel:
    """Wrap the loader: ``hold...`` texts block the model until ``release`` is set; every batch
    the model runs is recorded; ``boom...`` texts make the model raise."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    @property
    def texts_run(self) -> list[str]:
        """Every text the model was given, in order."""
        return [text for batch in self.batches for text in batch]

    def load(self, path):
        model = load_model(path)
        real = model.predict

        def predict(texts: list[str]):
            self.batches.append(list(texts))
            if any(t.startswith("boom") for t in texts):
                raise RuntimeError("the model exploded")
            if any(t.startswith("hold") for t in texts):
                self.entered.set()
                self.release.wait(30)
            return real(texts)

        model.predict = predict
        real_with_signals = model.predict_with_signals

        def predict_with_signals(texts: list[str]):  # the monitored stage's call: same gate
            predictions = predict(texts)
            return predictions, real_with_signals(texts)[1]

        model.predict_with_signals = predict_with_signals
        return model


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the event loop run until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def run_scenario(app: FastAPI, scenario) -> None:
    """Run ``scenario(client)`` with the app's lifespan, in one event loop, once it is ready."""

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                await until(lambda: app.state.server.not_ready_reason() is None, timeout=30)
                await scenario(c)

    asyncio.run(main())
