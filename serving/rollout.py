"""Ship a new model without dropping a request: hot reload, shadow scoring, canary (lesson 12).

Three ways a candidate model meets live traffic, from the safest:

* **Shadow** (``INFERENCE_SHADOW_MODEL_DIR``, ``INFERENCE_SHADOW_FRACTION``): the candidate
  scores a share of the texts *after* the stable model answered them, in its own thread, from a
  bounded queue that drops rather than waits. It never delays or changes an answer; the server
  exports how often the two agree (``inference_shadow_agreement_total``) and how far apart
  their P(positive) are (``inference_shadow_score_difference``).
* **Canary** (``INFERENCE_CANARY_MODEL_DIR``, ``INFERENCE_CANARY_FRACTION``): the candidate
  *answers* a share of the requests, chosen by a key (the ``X-Canary-Key`` header, else the
  request id), so one caller always sees one version. It runs in its own batcher, so a batch
  never mixes two models. ``inference_version_requests_total{version, role}`` counts requests
  per version (stable or canary).
* **Hot reload** (SIGHUP, or ``POST /admin/reload`` when ``INFERENCE_ADMIN_TOKEN`` is set): the
  stable model is replaced by the configured source (``INFERENCE_MODEL_DIR``, a path that may
  be a symlink switched atomically, else ``models/LATEST``), loaded and verified in a thread
  (checksum, the direct scorer's check, probe texts with known labels), then swapped in between
  two batches: the model thread reads the model once per batch, and every answer carries the
  version that scored it. A candidate that fails leaves the old model serving, and says why.

``POST /admin/reload`` answers 404 unless ``INFERENCE_ADMIN_TOKEN`` is set, 401 without an
``Authorization: Bearer`` token (``WWW-Authenticate: Bearer``), 403 with a wrong one (compared
in constant time), 200 ``{"model_version": new, "previous_version": old}`` after a swap, 409
while another reload runs, 422 with the reason when the body is wrong or the candidate is
refused (the old model keeps serving), 503 before the first model is loaded. The optional body
``{"model_dir": "..."}`` must resolve (symlinks followed) under ``models/`` or under the parent
of ``INFERENCE_MODEL_DIR``; without it the configured source is read, as on SIGHUP.

Several workers: SIGHUP to the launcher reaches every started worker (the supervisor passes it
on, serving/serve.py), and each reloads from the configured source on its own; the admin
endpoint reloads only the worker that answered it (send SIGHUP to reload them all).

``POST /admin/canary`` is guarded the same way (the same check: 404, 401, 403). Its body
``{"fraction": f}``, ``0 <= f <= 1``, sets the canary's share from the next request on:
``{"fraction": 0}`` rolls a bad canary back without a restart. Requests already queued on the
canary's batcher are still answered by it, so nothing accepted is dropped. It answers 200
``{"canary_version": v, "fraction": new, "previous_fraction": old}``, 409 when no canary model
is loaded, 422 with the reason for a bad body. The gauge ``inference_canary_fraction`` (0 when no
canary is loaded) follows it, and the log says ``canary_fraction_changed`` (old and new, and the
trigger). Several workers: like the reload endpoint, it changes only the worker that answered it;
the gauge is ``liveall`` (one series per live worker, label ``pid``), so a worker left on its old
share shows.

The canary's and the shadow's models are fixed at start-up (a canary is loaded only when its
fraction is above 0 at start); a reload replaces the stable model only.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Gauge, Histogram

from sentiment_model import ModelLoadError, Prediction, SentimentModel
from sentiment_model.artifact import MODELS_ROOT
from sentiment_model.data import clean_text
from serving.batcher import DynamicBatcher, Submission
from serving.errors import without_paths
from serving.metrics import Metrics
from serving.multiprocess import metrics_dir
from serving.settings import Settings

CANARY_HEADER = "x-canary-key"
# A candidate must get these right before it serves (and a model that does not is broken).
PROBES = (
    ("An absolutely wonderful film: moving, funny and beautifully acted. I loved it.", "positive"),
    ("A dull, boring waste of time. Terrible acting and the worst plot I have seen.", "negative"),
)
SHADOW_QUEUE_TEXTS = 1024  # texts waiting for the shadow model; beyond it they are skipped
DIFFERENCE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


class Scored(NamedTuple):
    """One text's answer and the version of the model that produced it."""

    label: str
    score: float
    version: str


class ReloadError(Exception):
    """A reload or a canary switch could not run (or its candidate or body was refused);
    ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class RolloutMetrics:
    """The rollout's metrics, in the app's registry (summed over workers like the rest)."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.reloads = Counter(
            "inference_model_reloads", "Hot reloads of the stable model.", ["outcome"], registry=r
        )
        self.versions = Counter(
            "inference_version_requests",
            "Prediction requests answered, by model version and role (stable or canary).",
            ["version", "role"],
            registry=r,
        )
        self.shadow_agreement = Counter(
            "inference_shadow_agreement",
            "Texts scored by the shadow model: same label as the answer, or not.",
            ["outcome"],
            registry=r,
        )
        self.shadow_difference = Histogram(
            "inference_shadow_score_difference",
            "Absolute difference of P(positive) between the answer and the shadow model.",
            buckets=DIFFERENCE_BUCKETS,
            registry=r,
        )
        self.shadow_skipped = Counter(
            "inference_shadow_skipped",
            "Texts chosen for shadow scoring but skipped: its queue was full.",
            registry=r,
        )
        # The canary's share now: one series per live worker (``pid``), since POST /admin/canary
        # changes only the worker that answered it and a merged number would hide the others.
        self.canary_fraction = Gauge(
            "inference_canary_fraction",
            "Share of request keys the canary answers (0 when none is loaded).",
            registry=r,
            multiprocess_mode="liveall",
        )
        for outcome in ("success", "failure"):  # export zeros, so rate() works from the start
            self.reloads.labels(outcome)
        for outcome in ("agree", "disagree"):
            self.shadow_agreement.labels(outcome)


def positive_probability(model: SentimentModel, label: str, score: float) -> float:
    """P(positive) of a binary answer (``score`` is the probability of ``label``)."""
    return score if label == model.labels[-1] else 1.0 - score


def verify(model: SentimentModel, scorer: str, log: logging.Logger, labels=None) -> None:
    """The checks after load_model's checksum and type checks: the scorer (the direct one is
    checked against scikit-learn and refused on any difference, as at start-up), the same
    labels as the model it replaces, and the probe texts. Raises ModelLoadError."""
    model.use_scorer(scorer, log)
    if labels is not None and tuple(labels) != model.labels:
        raise ModelLoadError(model.path, f"labels {model.labels} differ from {tuple(labels)}")
    cleaned = [clean_text(text) for text, _ in PROBES]
    if not np.isfinite(np.asarray(model.predict_proba(cleaned))).all():
        raise ModelLoadError(model.path, "probe texts got non-finite probabilities")
    for (text, expected), got in zip(PROBES, model.predict(cleaned), strict=True):
        if got.label != expected:
            raise ModelLoadError(
                model.path, f"probe {text[:30]!r}... got {got.label}, not {expected}"
            )


class Shadow:
    """A candidate that scores a share of the answered texts in its own thread."""

    def __init__(self, model: SentimentModel, fraction: float, metrics: RolloutMetrics) -> None:
        self.model, self.fraction, self.metrics = model, fraction, metrics
        self.queue: queue.Queue[tuple[list[str], list[float], list[str]] | None] = queue.Queue()
        self.waiting = 0  # texts in the queue (bounded by SHADOW_QUEUE_TEXTS)
        self.counting = threading.Lock()  # waiting goes up in the model thread, down in this one
        self.scored = 0
        self.thread = threading.Thread(target=self._run, name="shadow-model", daemon=True)
        self.thread.start()

    def offer(self, model: SentimentModel, texts: list[str], answers: Sequence) -> None:
        """Called in the model thread after a batch: pick the share, queue it, never wait."""
        chosen = [i for i in range(len(texts)) if random.random() < self.fraction]
        if not chosen:
            return
        with self.counting:
            full = self.waiting + len(chosen) > SHADOW_QUEUE_TEXTS
            if not full:
                self.waiting += len(chosen)
        if full:
            self.metrics.shadow_skipped.inc(len(chosen))
            return
        self.queue.put_nowait(
            (
                [texts[i] for i in chosen],
                [positive_probability(model, answers[i].label, answers[i].score) for i in chosen],
                [answers[i].label for i in chosen],
            )
        )

    def _run(self) -> None:
        while (job := self.queue.get()) is not None:
            texts, primary, labels = job
            try:
                for (label, score), p, answer in zip(
                    self.model.predict(texts), primary, labels, strict=True
                ):
                    agree = "agree" if label == answer else "disagree"
                    self.metrics.shadow_agreement.labels(agree).inc()
                    p_shadow = positive_probability(self.model, label, score)
                    self.metrics.shadow_difference.observe(abs(p_shadow - p))
                    self.scored += 1
            except Exception:  # a failing shadow must never touch serving
                logging.getLogger(__name__).exception("shadow_failed")
            finally:
                with self.counting:
                    self.waiting -= len(texts)

    def stop(self) -> None:
        self.queue.put(None)


def canary_bucket(key: str) -> float:
    """A stable number in [0, 1) for ``key``: the same key always lands in the same place."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def canary_key(request: Request, request_id: str) -> str:
    """The routing key: the caller's ``X-Canary-Key`` (one user, one version), else the id."""
    return request.headers.get(CANARY_HEADER) or request_id


class Rollout:
    """The stable model (reloadable), and the optional canary and shadow candidates."""

    def __init__(self, settings: Settings, metrics: Metrics, log: logging.Logger, load_model):
        self.settings, self.server_metrics, self.log = settings, metrics, log
        self.metrics = RolloutMetrics(metrics)
        self.load_model = load_model
        self.stable: SentimentModel | None = None
        self.canary: SentimentModel | None = None
        self.canary_batcher: DynamicBatcher[Scored] | None = None
        # The canary's share, read by submit() for each request: POST /admin/canary changes it.
        self.canary_fraction = settings.canary_fraction
        self.shadow: Shadow | None = None
        self.lock = asyncio.Lock()
        self.again = False  # a SIGHUP came during a reload: read the source once more after it
        self.signalled = False  # a SIGHUP reload is running
        self.on_swap: Callable[[SentimentModel], None] = lambda model: None
        # How a model scores cleaned texts in the model threads: a later step may wrap it (the
        # monitored stage records each text's signals on the way).
        self.score: Callable[[SentimentModel, list[str]], list[Prediction]] = lambda model, texts: (
            model.predict(texts)
        )

    # --- Scoring: in the batchers' model threads --------------------------------------------
    def predict_stable(self, texts: list[str]) -> list[Scored]:
        model = self.stable  # read once: the whole batch is scored by one model
        assert model is not None
        cleaned = [clean_text(text) for text in texts]
        answers = self.score(model, cleaned)
        if self.shadow is not None:
            self.shadow.offer(model, cleaned, answers)
        return [Scored(p.label, p.score, model.version) for p in answers]

    def predict_canary(self, texts: list[str]) -> list[Scored]:
        model = self.canary
        assert model is not None
        answers = self.score(model, [clean_text(text) for text in texts])
        return [Scored(p.label, p.score, model.version) for p in answers]

    async def submit(
        self, stable: DynamicBatcher, texts: list[str], key: str, timeout: float
    ) -> Submission[Scored]:
        """Score ``texts`` with the canary if ``key`` falls in its share, else the stable."""
        role, batcher = "stable", stable
        if self.canary_batcher is not None and canary_bucket(key) < self.canary_fraction:
            role, batcher = "canary", self.canary_batcher
        submission = await batcher.submit(texts, timeout)
        # A batch request's texts may ride in two batches, one on each side of a reload: then
        # score them again (reloads take seconds, so the second try is one model's).
        for _ in range(2):
            if len({result.version for result in submission.results}) == 1:
                break
            submission = await batcher.submit(texts, timeout)
        version = submission.results[0].version
        self.server_metrics.child(self.metrics.versions, version, role).inc()
        return submission

    # --- Start and stop ---------------------------------------------------------------------
    async def start(self, model: SentimentModel, make_batcher) -> None:
        """Serve ``model`` as the stable one; load the configured canary and shadow. A candidate
        that fails its checks is logged (``model_load_failed`` with its role) and left out:
        everything is then answered by the stable model."""
        self.stable = model
        s = self.settings
        if s.canary_model_dir is not None and s.canary_fraction > 0:
            self.canary = await self._candidate(s.canary_model_dir, "canary", model)
            if self.canary is not None:
                self.canary_batcher = make_batcher(self.predict_canary)
                await self.canary_batcher.start()
        self.metrics.canary_fraction.set(self.canary_fraction if self.canary else 0.0)
        if s.shadow_model_dir is not None and s.shadow_fraction > 0:
            candidate = await self._candidate(s.shadow_model_dir, "shadow", model)
            if candidate is not None:
                self.shadow = Shadow(candidate, s.shadow_fraction, self.metrics)

    async def _candidate(self, path: Path, role: str, stable: SentimentModel):
        try:
            return await asyncio.to_thread(self._load_verified, path, stable.labels)
        except Exception as e:
            self.log.error(
                "model_load_failed",
                extra={"role": role, "error_type": type(e).__name__, "error": str(e)},
            )
            return None

    def _load_verified(self, path: Path | None, labels) -> SentimentModel:
        model = self.load_model(path)
        verify(model, self.settings.scorer, self.log, labels)
        gc.collect()  # as at start-up: what lives on is moved out of the collector's reach
        gc.freeze()
        return model

    @property
    def drain_timed_out(self) -> bool:
        """Whether the canary's batcher left accepted texts unanswered at shutdown."""
        return self.canary_batcher is not None and self.canary_batcher.drain_timed_out

    async def stop(self, drain_timeout: float) -> int:
        if self.shadow is not None:
            self.shadow.stop()
        if self.canary_batcher is None:
            return 0
        return await self.canary_batcher.stop(drain_timeout)

    # --- Hot reload -------------------------------------------------------------------------
    async def reload(self, path: Path | None = None, trigger: str = "signal") -> tuple[str, str]:
        """Load, verify and swap in the stable model from ``path`` (default: the configured
        source). Returns (new version, previous version); raises ReloadError (409 when a reload
        is running, 422 when the candidate is refused: the old model keeps serving)."""
        if self.stable is None:
            raise ReloadError(503, "no model is serving yet")
        if self.lock.locked():
            raise ReloadError(409, "a reload is already running")
        async with self.lock:
            source = path if path is not None else self.settings.model_dir
            old = self.stable
            started = time.perf_counter()
            self.log.info(
                "model_reload_started",
                extra={
                    "trigger": trigger,
                    "model_dir": str(source or "models/LATEST"),
                    "model_version": old.version,
                },
            )
            try:
                new = await asyncio.to_thread(self._load_verified, source, old.labels)
            except Exception as e:
                self.metrics.reloads.labels("failure").inc()
                self.log.error(
                    "model_reload_failed",
                    extra={
                        "trigger": trigger,
                        "reason": str(e),
                        "error_type": type(e).__name__,
                        "model_version": old.version,
                    },
                    exc_info=not isinstance(e, ModelLoadError),
                )
                raise ReloadError(422, f"candidate refused: {without_paths(str(e))}") from None
            self.stable = new  # the next batch reads it; the running one keeps the old model
            self.on_swap(new)
            if metrics_dir() is not None:  # several workers: this one no longer serves the old
                self.server_metrics.model_info.labels(
                    old.version, old.metadata.sklearn_version
                ).set(0)
            self.server_metrics.set_model(new.version, new.metadata.sklearn_version)
            self.metrics.reloads.labels("success").inc()
            self.log.info(
                "model_reloaded",
                extra={
                    "trigger": trigger,
                    "model_version": new.version,
                    "previous_version": old.version,
                    "scorer": new.scorer,
                    "load_seconds": round(time.perf_counter() - started, 3),
                },
            )
            return new.version, old.version

    def on_sighup(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """The SIGHUP callback (runs in the signal handler): reload on the event loop. A SIGHUP
        during a reload makes one more reload follow it (the source may have moved again)."""

        async def reload_all() -> None:
            self.again = True
            if self.signalled:
                return  # the running loop below reads the source once more
            self.signalled = True
            try:
                while self.again:
                    self.again = False
                    while self.lock.locked():  # an admin reload: wait for it, then read again
                        await asyncio.sleep(0.05)
                    try:
                        await self.reload(trigger="signal")
                    except ReloadError as e:  # a refused candidate is logged by reload()
                        if e.status != 422:
                            self.log.warning(
                                "model_reload_failed",
                                extra={"trigger": "signal", "reason": e.reason},
                            )
            finally:
                self.signalled = False

        return lambda: loop.call_soon_threadsafe(lambda: loop.create_task(reload_all()))

    # --- POST /admin/reload -----------------------------------------------------------------
    def allowed_roots(self) -> list[Path]:
        roots = [MODELS_ROOT.resolve()]
        if self.settings.model_dir is not None:
            roots.append(Path(self.settings.model_dir).absolute().parent.resolve())
        return roots

    def refused(self, request: Request) -> Response | None:
        """The admin endpoints' guard: 404 unless INFERENCE_ADMIN_TOKEN is set, 401 without an
        ``Authorization: Bearer`` token, 403 with a wrong one (compared in constant time);
        None when the caller may go on."""
        token = self.settings.admin_token
        if token is None:
            return JSONResponse({"detail": "Not Found"}, 404)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return JSONResponse(
                {"detail": "missing bearer token"}, 401, headers={"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            return JSONResponse({"detail": "wrong token"}, 403)
        return None

    async def admin_reload(self, request: Request) -> Response:
        """``POST /admin/reload`` (404 unless INFERENCE_ADMIN_TOKEN is set): see the lesson."""
        if (refusal := self.refused(request)) is not None:
            return refusal
        try:
            path = self._requested_dir(await request.body())
            new, old = await self.reload(path, trigger="admin")
        except ReloadError as e:
            return JSONResponse({"detail": e.reason}, e.status)
        return JSONResponse({"model_version": new, "previous_version": old})

    def _requested_dir(self, body: bytes) -> Path | None:
        """The body's ``model_dir`` (None: the configured source), checked to be a directory
        under the models root or INFERENCE_MODEL_DIR's parent."""
        if not body.strip():
            return None
        data = admin_json(body)
        if not isinstance(data, dict) or set(data) - {"model_dir"}:
            raise ReloadError(422, 'body must be {} or {"model_dir": "..."}')
        value = data.get("model_dir")
        if value is None:
            return None
        if not isinstance(value, str) or not value or "\x00" in value:
            raise ReloadError(422, "model_dir must be a non-empty path string")
        resolved = Path(value).resolve()
        if not any(resolved.is_relative_to(root) for root in self.allowed_roots()):
            raise ReloadError(422, "model_dir is outside the model roots")
        return Path(value)

    # --- POST /admin/canary -----------------------------------------------------------------
    def set_canary_fraction(self, fraction: float, trigger: str = "admin") -> tuple[float, float]:
        """Give the canary ``fraction`` of the request keys from the next request on; returns
        (new, previous). Requests already queued on the canary's batcher are answered by it.
        Raises ReloadError(409) when no canary model is loaded."""
        if self.canary is None or self.canary_batcher is None:
            raise ReloadError(
                409,
                "no canary model is loaded (INFERENCE_CANARY_MODEL_DIR unset, its fraction 0 at "
                "start-up, or it failed its checks)",
            )
        previous, self.canary_fraction = self.canary_fraction, fraction
        self.metrics.canary_fraction.set(fraction)
        self.log.info(
            "canary_fraction_changed",
            extra={
                "trigger": trigger,
                "canary_version": self.canary.version,
                "fraction": fraction,
                "previous_fraction": previous,
            },
        )
        return fraction, previous

    async def admin_canary(self, request: Request) -> Response:
        """``POST /admin/canary`` ``{"fraction": f}``: guarded like ``/admin/reload``; 200 with
        the canary's version and the new and previous fractions, 409 without a canary, 422 for
        a bad body."""
        if (refusal := self.refused(request)) is not None:
            return refusal
        try:
            fraction = requested_fraction(await request.body())
            new, old = self.set_canary_fraction(fraction)
        except ReloadError as e:
            return JSONResponse({"detail": e.reason}, e.status)
        assert self.canary is not None
        return JSONResponse(
            {"canary_version": self.canary.version, "fraction": new, "previous_fraction": old}
        )


def admin_json(body: bytes) -> object:
    """An admin endpoint's body, parsed; ReloadError 422 when it is not JSON (or nested too
    deep for the parser: an error of the caller, not of the server)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ReloadError(422, "body is not JSON") from None


def requested_fraction(body: bytes) -> float:
    """The body's ``fraction``: a number from 0 to 1 (ReloadError 422 otherwise)."""
    data = admin_json(body)
    if not isinstance(data, dict) or set(data) != {"fraction"}:
        raise ReloadError(422, 'body must be {"fraction": <a number from 0 to 1>}')
    value = data["fraction"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReloadError(422, "fraction must be a number")
    if not 0 <= value <= 1:  # NaN fails it too; a huge integer is never made a float
        raise ReloadError(422, "fraction must be from 0 to 1")
    return float(value) + 0.0  # -0.0 reads as 0.0
