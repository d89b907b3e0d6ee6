"""Locust load test for every server stage: ``POST /predict`` plus a share of ``/predict/batch``.

Run by hand against a server on port 8000::

    python -m locust -f loadtest/locustfile.py --headless -u 16 -r 16 -t 20s \\
        --host http://127.0.0.1:8000 --payload-profile long --batch-share 0.1

Options (each also read from an environment variable, which is how the benchmark runner
configures the locust processes it starts):

``--payload-profile`` / ``LOADTEST_PROFILE``
    ``short`` (Rotten Tomatoes sentences) or ``long`` (IMDB reviews); texts are drawn at random
    from that source's test-split texts.
``--payload-file`` / ``LOADTEST_PAYLOADS``
    JSON file written by :func:`loadtest.payloads.write_payload_file`; without it every locust
    process reads the data set itself (a few seconds, same texts).
``--batch-share`` / ``LOADTEST_BATCH_SHARE``
    Fraction of requests sent to ``/predict/batch`` (2-8 texts each). 0 turns the route off,
    for the naive stage, which has no such route.
``--user-rate`` / ``LOADTEST_USER_RATE``
    Requests per second per user. 0 (the default) is a closed loop: each user sends its next
    request as soon as the previous one is answered, which finds the maximum throughput. A
    positive rate paces every user (with a random start phase so users do not fire in
    lock-step): ``users x rate`` is then the offered load, as long as responses come back faster
    than ``1 / rate``; a user whose response is late sends its next request at once and does
    not catch up on the requests it missed.

A request counts as failed when the status is not 200 or the body does not have the contract's
shape. Besides locust's own CSV files (whose percentiles are rounded to whole milliseconds),
each run writes ``<csv prefix>_latency.json``: exact latency percentiles per route, computed
from every response time measured after the statistics were last reset.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, events, task
from locust.env import Environment

from loadtest.latency import latency_summary
from loadtest.payloads import (
    PROFILES,
    batch_body,
    check_prediction,
    load_payload_file,
    predict_body,
)

_texts: list[str] = []


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument(
        "--payload-profile",
        choices=sorted(PROFILES),
        default="short",
        env_var="LOADTEST_PROFILE",
        help="payload profile: short (Rotten Tomatoes sentences) or long (IMDB reviews)",
    )
    parser.add_argument(
        "--payload-file",
        default="",
        env_var="LOADTEST_PAYLOADS",
        help="JSON file of texts written by loadtest.payloads.write_payload_file",
    )
    parser.add_argument(
        "--batch-share",
        type=float,
        default=0.1,
        env_var="LOADTEST_BATCH_SHARE",
        help="fraction of requests sent to /predict/batch (0 = never)",
    )
    parser.add_argument(
        "--user-rate",
        type=float,
        default=0.0,
        env_var="LOADTEST_USER_RATE",
        help="requests per second per user (0 = closed loop, as fast as answered)",
    )


@events.init.add_listener
def _load_texts(environment: Environment, **_kwargs) -> None:
    opts = environment.parsed_options
    if opts is None:  # imported, not run by locust
        return
    if not 0.0 <= opts.batch_share <= 1.0:
        raise ValueError(f"--batch-share must be within [0, 1], got {opts.batch_share}")
    if opts.user_rate < 0 or not math.isfinite(opts.user_rate):
        raise ValueError(f"--user-rate must be >= 0, got {opts.user_rate}")
    _texts[:] = load_payload_file(opts.payload_file, opts.payload_profile)
    if not _texts:
        raise ValueError(f"no texts for profile {opts.payload_profile!r}")


class _Window:
    """Every response time (ms) since the statistics were last reset, and the window's span."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.latencies: dict[str, list[float]] = {}
        self.failures: dict[str, int] = {}
        self.texts = 0  # texts predicted successfully (a batch request counts its texts)
        self.start = time.perf_counter()
        self.stop: float | None = None


_window = _Window()


@events.request.add_listener
def _record_request(name: str, response_time: float, exception, **_kwargs) -> None:
    if _window.stop is not None:
        return
    if exception is None:
        _window.latencies.setdefault(name, []).append(response_time)
    else:
        _window.failures[name] = _window.failures.get(name, 0) + 1


@events.test_start.add_listener
@events.reset_stats.add_listener
def _reset_window(**_kwargs) -> None:
    _window.reset()


@events.test_stop.add_listener
def _close_window(**_kwargs) -> None:
    if _window.stop is None:
        _window.stop = time.perf_counter()


@events.quitting.add_listener
def _write_latencies(environment: Environment, **_kwargs) -> None:
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        _close_window()
        elapsed = _window.stop - _window.start
        summary = latency_summary(_window.latencies, _window.failures, elapsed)
        summary["Aggregated"] |= {"texts": _window.texts, "texts_per_s": _window.texts / elapsed}
        Path(f"{prefix}_latency.json").write_text(json.dumps(summary, indent=1))


class ModelUser(FastHttpUser):
    """One API client: mostly single predictions, sometimes a small batch."""

    def on_start(self) -> None:
        """Set the pacing (if any) and sleep a random phase so paced users spread out."""
        opts = self.environment.parsed_options
        self.batch_share = opts.batch_share if opts else 0.0
        self.rate = opts.user_rate if opts else 0.0
        self.rng = random.Random()
        self._next_send = None
        if self.rate > 0:
            gevent.sleep(self.rng.random() / self.rate)

    def wait_time(self) -> float:
        """0 in a closed loop; otherwise the time left until this user's next scheduled send."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        interval = 1.0 / self.rate
        self._next_send = now if self._next_send is None else self._next_send + interval
        # A late user sends at once but does not burst to catch up on missed sends.
        self._next_send = max(self._next_send, now)
        return self._next_send - now

    @task
    def predict(self) -> None:
        """``POST /predict`` (or, with probability ``batch_share``, ``/predict/batch``)."""
        if self.batch_share and self.rng.random() < self.batch_share:
            self._predict_batch()
            return
        body = predict_body(self.rng.choice(_texts))
        with self.client.post("/predict", json=body, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            try:
                problem = check_prediction(resp.json())
            except ValueError:
                problem = "body is not JSON"
            if problem:
                resp.failure(problem)
            else:
                _window.texts += 1

    def _predict_batch(self) -> None:
        body = batch_body(_texts, self.rng)
        with self.client.post("/predict/batch", json=body, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            try:
                preds = resp.json().get("predictions")
            except (ValueError, AttributeError):
                resp.failure("body is not a JSON object")
                return
            if not isinstance(preds, list) or len(preds) != len(body["texts"]):
                resp.failure(f"expected {len(body['texts'])} predictions")
                return
            problem = next(filter(None, map(check_prediction, preds)), None)
            if problem:
                resp.failure(problem)
            else:
                _window.texts += len(preds)
