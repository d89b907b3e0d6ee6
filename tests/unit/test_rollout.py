"""serving/rollout.py alone: the swap between two batches, the reload's refusals, the canary's
key, the shadow's bounded queue; SIGHUP's way to the app and from the supervisor to workers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from sentiment_model import ChecksumMismatchError, Prediction
from serving import rollout as ro
from serving.batcher import DynamicBatcher
from serving.errors import without_paths
from serving.metrics import Metrics
from serving.settings import load_settings
from serving.shutdown import ShutdownSignals


class FakeModel:
    """A model with a version that answers 'positive' for texts with 'good' in them."""

    labels = ("negative", "positive")
    scorer = "sklearn"

    def __init__(self, version: str, gate: threading.Event | None = None) -> None:
        self.version, self.gate, self.path = version, gate, f"/m/{version}"
        self.metadata = SimpleNamespace(sklearn_version="1", version=version)

    def use_scorer(self, kind, log=None):
        return self.scorer

    def predict_proba(self, texts):
        return [[0.2, 0.8] if "good" in t or "wonderful" in t else [0.9, 0.1] for t in texts]

    def predict(self, texts):
        if self.gate is not None:
            self.gate.wait(5)  # a batch that takes its time
        return [
            Prediction("positive", 0.8) if ("good" in t or "wonderful" in t) else
            Prediction("negative", 0.9)
            for t in texts
        ]  # fmt: skip


def make_rollout(load=None, **settings) -> ro.Rollout:
    s = load_settings(log_path="unused.log", **settings)
    return ro.Rollout(s, Metrics(), logging.getLogger("test.rollout"), load or FakeModel)


def test_a_reload_during_a_batch_swaps_for_the_next_batch_only():
    async def main() -> list:
        gate = threading.Event()
        old, new = FakeModel("old", gate), FakeModel("new")
        rollout = make_rollout(load=lambda path: new)
        rollout.stable = old
        batcher = DynamicBatcher(rollout.predict_stable, max_batch_size=8, max_queue=64)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(["good", "bad", "good"], 10))
        await asyncio.sleep(0.05)  # the first batch is running (held by the gate)
        assert await rollout.reload() == ("new", "old")  # swapped while it runs
        gate.set()
        second = await batcher.submit(["good"], 10)
        results = [r.version for r in (await first).results] + [second.results[0].version]
        await batcher.stop(1)
        return results

    # The batch that was running when the reload swapped is old's throughout; the next is new's.
    assert asyncio.run(main()) == ["old", "old", "old", "new"]


def test_a_failed_load_keeps_the_old_model_and_counts_the_failure(caplog):
    def broken(path):
        raise ChecksumMismatchError("/m/x/model.skops", "sha256 is 1..., metadata says 2...")

    rollout = make_rollout(load=broken)
    rollout.stable = old = FakeModel("old")
    with pytest.raises(ro.ReloadError) as refused:
        asyncio.run(rollout.reload())
    assert refused.value.status == 422 and "/m/x" not in refused.value.reason
    assert rollout.stable is old
    assert rollout.metrics.reloads.labels("failure")._value.get() == 1
    assert rollout.metrics.reloads.labels("success")._value.get() == 0
    [line] = [r for r in caplog.records if r.getMessage() == "model_reload_failed"]
    assert "sha256" in line.reason


def test_a_candidate_with_other_labels_or_wrong_probes_is_refused():
    class Inverted(FakeModel):
        def predict(self, texts):
            return [Prediction("negative", 0.8) for _ in texts]

    class OtherLabels(FakeModel):
        labels = ("neg", "pos")

    for candidate in (Inverted("bad"), OtherLabels("odd")):
        rollout = make_rollout(load=lambda path, c=candidate: c)
        rollout.stable = FakeModel("old")
        with pytest.raises(ro.ReloadError):
            asyncio.run(rollout.reload())
        assert rollout.stable.version == "old"


def test_a_reload_before_a_model_serves_is_refused():
    with pytest.raises(ro.ReloadError) as refused:
        asyncio.run(make_rollout().reload())
    assert refused.value.status == 503


def test_sighups_during_a_reload_make_one_more_reload_after_it():
    loads = []

    def load(path):
        loads.append(path)
        time.sleep(0.2)
        return FakeModel(f"v{len(loads)}")

    async def main() -> None:
        rollout = make_rollout(load=load)
        rollout.stable = FakeModel("v0")
        hup = rollout.on_sighup(asyncio.get_running_loop())
        for _ in range(3):  # three signals in a row: one reload, then one more
            hup()
            await asyncio.sleep(0.05)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not rollout.signalled:
                break
        assert rollout.stable.version == "v2"

    asyncio.run(main())
    assert len(loads) == 2


def test_the_canary_bucket_is_deterministic_and_spread():
    assert ro.canary_bucket("user-1") == ro.canary_bucket("user-1")
    buckets = [ro.canary_bucket(f"user-{i}") for i in range(2000)]
    assert all(0 <= b < 1 for b in buckets)
    assert 0.07 < sum(b < 0.1 for b in buckets) / len(buckets) < 0.13
    assert ro.canary_bucket("\udc80") >= 0  # a lone surrogate in a header cannot break it


def test_the_canary_key_is_the_header_else_the_request_id():
    with_header = SimpleNamespace(headers={"x-canary-key": "alice"})
    assert ro.canary_key(with_header, "req-1") == "alice"
    assert ro.canary_key(SimpleNamespace(headers={}), "req-1") == "req-1"


def test_the_shadow_queue_is_bounded_and_never_waits():
    hold = threading.Event()
    metrics = ro.RolloutMetrics(Metrics())

    class Stuck(FakeModel):
        def predict(self, texts):
            hold.wait(5)
            return super().predict(texts)

    shadow = ro.Shadow(Stuck("shadow"), 1.0, metrics)
    answers = [Prediction("positive", 0.8)] * 600
    started = time.monotonic()
    shadow.offer(FakeModel("stable"), ["good"] * 600, answers)
    shadow.offer(FakeModel("stable"), ["good"] * 600, answers)  # does not fit: skipped
    assert time.monotonic() - started < 0.5
    assert metrics.shadow_skipped._value.get() == 600
    hold.set()
    deadline = time.monotonic() + 10
    while shadow.scored < 600 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert metrics.shadow_agreement.labels("agree")._value.get() == 600
    shadow.stop()


def test_positive_probability_of_a_binary_answer():
    model = FakeModel("v")
    assert ro.positive_probability(model, "positive", 0.8) == 0.8
    assert ro.positive_probability(model, "negative", 0.9) == pytest.approx(0.1)


def test_without_paths_is_quick_on_a_long_message_without_a_slash_after_its_words():
    started = time.monotonic()
    message = "/tmp/m/sentiment-small-06a1cce88cbe: probe 'An absolutely wonderful film' got x"
    assert without_paths(message) == "<path>: probe 'An absolutely wonderful film' got x"
    assert without_paths("word" * 20_000 + " /a") == "word" * 20_000 + " <path>"
    assert time.monotonic() - started < 1


def test_sighup_calls_on_hup_when_given_else_is_ignored(caplog):
    called = []
    signals = ShutdownSignals(
        lambda: None, lambda: None, logging.getLogger("t"), lambda: called.append("hup")
    )
    signals._ignore(signal.SIGHUP, None)
    assert called == ["hup"]
    plain = ShutdownSignals(lambda: None, lambda: None, logging.getLogger("t"))
    plain._ignore(signal.SIGHUP, None)
    assert [r.getMessage() for r in caplog.records] == ["signal_ignored"]


def test_the_supervisor_passes_sighup_on_to_started_workers(monkeypatch, capsys):
    from serving import serve

    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(logging.getLogger("inference.launcher"), "handlers", [])
    workers = [
        SimpleNamespace(pid=11, is_ready=lambda timeout: True),
        SimpleNamespace(pid=12, is_ready=lambda timeout: False),  # still starting: skipped
        SimpleNamespace(pid=13, is_ready=lambda timeout: True),
    ]
    supervisor = SimpleNamespace(processes=workers, pending_hup=None)
    serve.Supervisor.handle_hup(supervisor)
    assert sent == [(11, signal.SIGHUP), (13, signal.SIGHUP)]
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["event"], line["role"], line["workers"], line["when_started"]) == (
        "signal_forwarded",
        "supervisor",
        [11, 13],
        [12],
    )
    # Worker 12 gets its SIGHUP once it has started (the supervisor's next check).
    monkeypatch.setattr(serve.Multiprocess, "keep_subprocess_alive", lambda self: None)
    serve.Supervisor.keep_subprocess_alive(supervisor)
    assert sent[2:] == [] and supervisor.pending_hup == {12}
    workers[1].is_ready = lambda timeout: True
    serve.Supervisor.keep_subprocess_alive(supervisor)
    assert sent[2:] == [(12, signal.SIGHUP)] and supervisor.pending_hup == set()


def test_a_sighup_before_the_model_serves_is_logged_not_lost(caplog):
    async def main() -> None:
        rollout = make_rollout()
        rollout.on_sighup(asyncio.get_running_loop())()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if any(r.getMessage() == "model_reload_failed" for r in caplog.records):
                return

    asyncio.run(main())
    [line] = [r for r in caplog.records if r.getMessage() == "model_reload_failed"]
    assert line.reason == "no model is serving yet"


def test_the_canary_share_set_at_run_time_applies_to_the_next_submission(caplog):
    caplog.set_level(logging.INFO, logger="test.rollout")

    async def main() -> list[str]:
        rollout = make_rollout(canary_fraction=1.0)
        rollout.stable, rollout.canary = FakeModel("stable"), FakeModel("canary")
        stable = DynamicBatcher(rollout.predict_stable, max_batch_size=8, max_queue=64)
        rollout.canary_batcher = DynamicBatcher(
            rollout.predict_canary, max_batch_size=8, max_queue=64
        )
        for batcher in (stable, rollout.canary_batcher):
            await batcher.start()
        seen = []
        for fraction in (None, 0.0, 1.0):
            if fraction is not None:
                rollout.set_canary_fraction(fraction, trigger="test")
            seen.append((await rollout.submit(stable, ["good"], "user-1", 5)).results[0].version)
        for batcher in (stable, rollout.canary_batcher):
            await batcher.stop(1)
        assert rollout.metrics.canary_fraction._value.get() == 1.0
        return seen

    assert asyncio.run(main()) == ["canary", "stable", "canary"]
    changes = [r for r in caplog.records if r.getMessage() == "canary_fraction_changed"]
    assert [(c.previous_fraction, c.fraction, c.trigger) for c in changes] == [
        (1.0, 0.0, "test"),
        (0.0, 1.0, "test"),
    ]


def test_without_a_canary_the_share_cannot_be_set():
    rollout = make_rollout(canary_fraction=0.5)
    with pytest.raises(ro.ReloadError) as refused:
        rollout.set_canary_fraction(0.0)
    assert refused.value.status == 409 and "no canary model" in refused.value.reason
    assert rollout.canary_fraction == 0.5


@pytest.mark.parametrize("body", [b"0.5", b'{"fraction": 1e400}', b'{"fraction": [0.5]}'])
def test_the_canary_body_is_a_fraction_from_0_to_1(body):
    with pytest.raises(ro.ReloadError) as refused:
        ro.requested_fraction(body)
    assert refused.value.status == 422
    assert ro.requested_fraction(b'{"fraction": 0}') == 0.0
    assert ro.requested_fraction(b'{"fraction": 0.25}') == 0.25
    assert str(ro.requested_fraction(b'{"fraction": -0.0}')) == "0.0"
