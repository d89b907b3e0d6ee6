"""Model monitoring: what the model was given and how sure it was, and whether it was right.

A server can answer every request with a fast 200 while its model is wrong. Two kinds of
evidence tell, and this module gives the server both (lessons/11_monitoring):

- **Signals, at once, for every text** (:meth:`ModelMonitor.observe`): three Prometheus
  histograms whose buckets are the ones the artifact's reference distributions use
  (``sentiment_model.signals``), so a recent window can be compared with the reference:

  ========================================  ==============================================
  ``inference_prediction_confidence``       the returned score: probability of the label
  ``inference_input_tokens``                the text's length in words, as the model reads it
  ``inference_unknown_token_ratio``         share of its terms the vocabulary does not know
  ========================================  ==============================================

  plus the label mix, ``inference_predictions_total{label}`` (serving/metrics.py). The direct
  scorer has the terms and the vocabulary look-ups anyway (``predict_with_signals``), so the
  signals cost the histograms' updates, in the batcher's thread, not on the event loop.
- **Feedback, late, for some texts** (``POST /feedback``, :class:`FeedbackStore`): the true label
  of an earlier prediction, named by its request id (the ``X-Request-ID`` response header). The
  server remembers the last ``INFERENCE_FEEDBACK_MAX_IDS`` predictions for
  ``INFERENCE_FEEDBACK_TTL_S`` seconds and counts each answer in
  ``inference_feedback_total{outcome="correct"|"wrong"}``: live accuracy is
  ``correct / (correct + wrong)``. Drift says the input changed; feedback says the answers are
  wrong. Neither implies the other.

With several workers (``--workers N``) the histograms and the counter are shared through the
metrics directory like every other metric (serving/multiprocess.py). The remembered predictions
are not: each worker remembers the requests it answered, and the kernel hands a feedback
request to any worker. A worker that does not know an id answers 404 and says so; the answers
that do arrive are a random sample (which worker gets a connection does not depend on whether
the prediction was right), so the accuracy stays a fair estimate, from fewer answers.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, Field, StringConstraints

from sentiment_model.signals import CONFIDENCE_BUCKETS, TOKEN_BUCKETS, UNKNOWN_BUCKETS, Signals
from serving.schemas import Label, StrictModel

FEEDBACK_OUTCOMES = ("correct", "wrong")
FEEDBACK_MAX_BODY_BYTES = 1024  # {"request_id": 128 characters, "label": ..., "index": ...}
# The ids the server hands out or accepts in X-Request-ID (serving/asgi.py: SAFE_REQUEST_ID).
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,128}$")]


class FeedbackRequest(StrictModel):
    """The true label of an earlier prediction."""

    request_id: RequestId = Field(description="The X-Request-ID of the prediction's answer.")
    label: Label = Field(description="The true label of the text.")
    index: int | None = Field(
        None,
        ge=0,
        le=1_000_000,
        description="Position of the text in a /predict/batch request; omit for /predict.",
    )


class FeedbackResponse(BaseModel):
    """Answer to POST /feedback."""

    request_id: str
    index: int | None = None
    predicted: Label
    correct: bool


class FeedbackStore:
    """The last ``max_predictions`` predictions, each for ``ttl_s`` seconds, by request id.

    One entry per request: a /predict request holds one label, a /predict/batch request one per
    text, and every text counts towards ``max_predictions`` (so memory is bounded by texts,
    whatever the batch sizes). Oldest first out; an entry also goes once older than ``ttl_s``.
    Feedback for a text is taken once: a second answer is refused (409), not counted twice.
    A request id seen again (a client may send its own ``X-Request-ID``) replaces the older
    entry. Used from the event loop only: no lock.
    """

    def __init__(
        self,
        max_predictions: int,
        ttl_s: float,
        *,
        several_workers: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_predictions = max_predictions
        self.ttl_s = ttl_s
        self.several_workers = several_workers
        self.clock = clock
        # request id -> (expiry time, label, label, ...); a label becomes None once its feedback
        # arrived. One flat tuple of a float and strings: the garbage collector stops tracking
        # it the first time it looks, so 100,000 remembered predictions add nothing to later
        # full collections (lists, or a tuple holding one, would: the stage's gc.freeze() note).
        self._entries: OrderedDict[str, tuple] = OrderedDict()
        self._size = 0  # texts remembered: the sum of len(labels)

    def __len__(self) -> int:
        return self._size

    def remember(self, request_id: str, labels: Sequence[str]) -> None:
        """Keep the labels predicted for ``request_id`` (in text order)."""
        now = self.clock()
        old = self._entries.pop(request_id, None)
        if old is not None:
            self._size -= len(old) - 1
        if len(labels) > self.max_predictions:  # a batch larger than the whole store
            return
        self._entries[request_id] = (now + self.ttl_s, *labels)
        self._size += len(labels)
        entries = self._entries
        while entries:  # the oldest go first: expired, or beyond the bound
            oldest = next(iter(entries.values()))
            if oldest[0] > now and self._size <= self.max_predictions:
                break
            entries.popitem(last=False)
            self._size -= len(oldest) - 1

    def give(self, feedback: FeedbackRequest) -> FeedbackResponse:
        """Record the true label of a remembered prediction, or raise the HTTP error that says
        why not: 404 unknown or expired id (or index), 409 feedback already given, 422 a batch
        request without ``index``."""
        request_id, index = feedback.request_id, feedback.index
        entry = self._entries.get(request_id)
        if entry is None or entry[0] <= self.clock():
            raise HTTPException(404, self._unknown(request_id, expired=entry is not None))
        labels = entry[1:]
        if index is None and len(labels) > 1:
            last = len(labels) - 1
            msg = f"request {request_id} classified {len(labels)} texts: give index 0..{last}"
            # Answered like any invalid body (serving/errors.py): 422, the field and the problem.
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body", "index"), "msg": msg}]
            )
        position = index or 0
        if position >= len(labels):
            raise HTTPException(
                404, f"request {request_id} classified {len(labels)} text(s): no index {position}"
            )
        predicted = labels[position]
        if predicted is None:
            raise HTTPException(409, f"feedback for request {request_id} was already given")
        given = (*entry[: position + 1], None, *entry[position + 2 :])
        self._entries[request_id] = given  # the same place in the order
        return FeedbackResponse(
            request_id=request_id,
            index=index,
            predicted=predicted,
            correct=predicted == feedback.label,
        )

    def _unknown(self, request_id: str, *, expired: bool) -> str:
        if expired:
            why = f"its prediction is older than INFERENCE_FEEDBACK_TTL_S ({self.ttl_s:g} s)"
        else:
            why = (
                f"no prediction with that id in the last {self.max_predictions} "
                f"(INFERENCE_FEEDBACK_MAX_IDS) and {self.ttl_s:g} s (INFERENCE_FEEDBACK_TTL_S)"
            )
        message = f"request {request_id} unknown or expired: {why}"
        if self.several_workers:  # each worker remembers only the requests it answered
            message += "; not known to this worker: with several workers only the worker that "
            message += "answered a prediction remembers it"
        return message


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every ``v``, in one update per bucket used.

    A histogram is a sum and one count per bucket, and every update of one of them takes a
    lock, and with several workers writes a memory-mapped file (a few microseconds each:
    loadtest/monitoring_cost.py). ``observe`` makes two updates per value; here a batch of n
    texts makes one for the sum and one per bucket its values fall in. prometheus-client has
    no public call for it, so this adds to the histogram's own ``_sum`` and ``_buckets``
    (tests/unit/test_feedback_store.py checks the result against ``observe``). A histogram
    without those attributes (another version of the library): plain ``observe``.
    """
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    bounds = getattr(histogram, "_upper_bounds", None)  # the bounds, +Inf last
    if buckets is None or total is None or bounds is None:
        for value in values:
            histogram.observe(value)
        return
    if len(values) == 1:  # the common case at low load: the same two updates, less around them
        [value] = values
        total.inc(value)
        buckets[bisect.bisect_left(bounds, value)].inc(1)
        return
    counts: dict[int, int] = {}
    for value in values:  # the first bucket with value <= bound, as observe() picks it
        i = bisect.bisect_left(bounds, value)
        counts[i] = counts.get(i, 0) + 1
    total.inc(math.fsum(values))
    for i, n in counts.items():
        buckets[i].inc(n)


class ModelMonitor:
    """The model's signals and the feedback of one app, on its metrics registry."""

    def __init__(self, registry: CollectorRegistry, store: FeedbackStore) -> None:
        self.store = store
        self.confidence = Histogram(
            "inference_prediction_confidence",
            "Score returned per text: the probability of the predicted label.",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.tokens = Histogram(
            "inference_input_tokens",
            "Words per text, as the model's tokenizer reads it.",
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.unknown_ratio = Histogram(
            "inference_unknown_token_ratio",
            "Share of a text's terms (words and word pairs) the model's vocabulary does not know.",
            buckets=UNKNOWN_BUCKETS,
            registry=registry,
        )
        self.feedback = Counter(
            "inference_feedback",
            "True labels received for earlier predictions, by whether the prediction was right.",
            ["outcome"],
            registry=registry,
        )
        self._outcome = {
            True: self.feedback.labels("correct"),  # both exported from the start (0)
            False: self.feedback.labels("wrong"),
        }

    def observe(self, signals: Sequence[Signals]) -> None:
        """Record a batch's signals (in the batcher's thread): each histogram once per batch."""
        if not signals:
            return
        observe_all(self.confidence, [s.confidence for s in signals])
        observe_all(self.tokens, [s.tokens for s in signals])
        observe_all(self.unknown_ratio, [s.unknown_ratio for s in signals])

    def remember(self, request_id: str, labels: Sequence[str]) -> None:
        """Keep a request's predicted labels for later feedback."""
        self.store.remember(request_id, labels)

    def give_feedback(self, feedback: FeedbackRequest) -> FeedbackResponse:
        """Check ``feedback`` against the remembered prediction and count the outcome."""
        answer = self.store.give(feedback)
        self._outcome[answer.correct].inc()
        return answer
