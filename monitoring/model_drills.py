"""Model drills: the server answers every request with a fast 200 and the model is wrong.

Notebook 11 (``notebooks/11_model_monitoring.ipynb``) and lesson 11 use these pieces next to the
ones of :mod:`monitoring.drills` (a real Prometheus, :func:`~monitoring.drills.read_log`,
:func:`~monitoring.drills.plot_panels`), each acting from outside the server as in production:

- :class:`LabelledTraffic`: callers that send texts whose true label is known and, for a share
  of the answers, send that label back to ``POST /feedback`` (late ground truth). The texts it
  sends can be switched while it runs (:meth:`LabelledTraffic.send`): a domain shift.
- :func:`held_out`: texts the model never saw (the test split), by source: IMDB reviews (long)
  and Rotten Tomatoes sentences (one line), the two kinds the data set ships.
- :func:`garbage`: text that is not language, as a broken upstream sends it (random tokens of
  letters and digits: ids, hashes, encoded bytes instead of the text).
- :func:`shuffled_label_model`: a model trained on shuffled labels, exported as a valid
  artifact (checksums right, loads, answers 200): a silent bad deploy.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import pandas as pd

from monitoring.faults import Traffic

LABELS = ("negative", "positive")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def held_out(
    test: pd.DataFrame | None = None, source: str | None = None, seed: int = 0
) -> list[tuple[str, str]]:
    """``(text, true label)`` of the test split (never trained on, never calibrated on;
    ``test``: that split if already loaded), shuffled; ``source``: ``"imdb"``,
    ``"rotten_tomatoes"`` or None (both, in the split's mix: the reference's)."""
    if test is None:
        from sentiment_model.data import load_splits

        test = load_splits().test
    if source is not None:
        test = test[test["source"] == source]
    test = test.sample(frac=1.0, random_state=seed)
    return [(t, LABELS[y]) for t, y in zip(test["text"], test["label"], strict=True)]


def garbage(n: int, seed: int = 0) -> list[tuple[str, None]]:
    """``n`` texts that are not language: 5 to 60 random tokens of 3 to 12 letters and digits
    (what arrives when an upstream sends ids or encoded bytes instead of the text). No true
    label: nobody can give feedback on them."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = rng.randint(5, 60)
        texts.append(
            " ".join(
                "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(3, 12)))
                for _ in range(words)
            )
        )
    return [(t, None) for t in texts]


class LabelledTraffic(Traffic):
    """:class:`~monitoring.faults.Traffic` of ``(text, true label)`` rows on ``/predict``: one
    request per row in turn, ``rate`` a second; after a 200 answer, every ``feedback_every``-th
    request also sends its true label to ``POST /feedback`` (rows without a label send none).
    :meth:`send` switches the rows while it runs. :attr:`feedback` counts the feedback answers by
    status."""

    def __init__(
        self,
        server_url: str,
        rate: float,
        rows: list[tuple[str, str | None]],
        feedback_every: int = 2,
        prefix: str = "app",
        **kwargs,
    ) -> None:
        super().__init__(server_url, rate, prefix=prefix, **kwargs)
        self.rows = list(rows)
        self.feedback_every = feedback_every
        self.feedback: dict[int, int] = {}
        self.switched: list[tuple[float, str]] = []

    def send(self, rows: list[tuple[str, str | None]], name: str = "") -> float:
        """From now on, send ``rows``; return the time of the switch (``time.time()``)."""
        self.rows = list(rows)
        now = time.time()
        self.switched.append((now, name))
        return now

    async def _one(self, client: httpx.AsyncClient, i: int, gate: asyncio.Semaphore) -> None:
        rows = self.rows
        text, label = rows[i % len(rows)]
        request_id = f"{self.prefix}-{i}"
        sent = time.time()
        status = 0
        try:
            resp = await client.post(
                self.path, json={"text": text}, headers={"X-Request-ID": request_id}
            )
            status = resp.status_code
            if status == 200 and label is not None and i % self.feedback_every == 0:
                fb = await client.post("/feedback", json={"request_id": request_id, "label": label})
                self.feedback[fb.status_code] = self.feedback.get(fb.status_code, 0) + 1
        except httpx.HTTPError:
            pass  # no answer at all (connection refused during a restart, timeout)
        finally:
            gate.release()
        self.results.append(
            {
                "sent": sent,
                "request_id": request_id,
                "status": status,
                "latency_s": time.time() - sent,
                "retry_after": None,
            }
        )


def shuffled_label_model(dest: Path, splits=None, n: int = 500, seed: int = 0) -> Path:
    """Train the course's pipeline on ``n`` training rows whose labels are shuffled (a data
    pipeline that joined texts to the wrong labels) and export it into ``dest``: a valid,
    loadable artifact that has learnt nothing. A few seconds. Returns the model folder."""
    from sentiment_model.candidates import train_candidate  # the drills' candidates, lesson 12

    return train_candidate(
        Path(dest),
        rows_per_group=n // 4,
        shuffle_labels=True,
        seed=seed,
        splits=splits,
        test_rows=200,
    )


def alert_times(
    prom, names, since: float, timeout: float = 60.0, poll: float = 0.5, until: str = "firing_s"
) -> dict:
    """Poll Prometheus until every alert in ``names`` fires (``until="pending_s"``: is pending)
    or ``timeout`` passes; return
    ``{name: {"pending_s": ..., "firing_s": ..., "labels": ...}}``: seconds after ``since``
    (a ``time.time()``) when each was first seen pending and firing."""
    seen: dict[str, dict] = {n: {} for n in names}
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        alerts = prom.alerts()
        now = time.time() - since
        for row in alerts.itertuples():
            if row.alertname in seen:
                state = seen[row.alertname]
                # activeAt: when its condition began to hold (pending); firing after `for:`
                state.setdefault("pending_s", round(row.active_at.timestamp() - since, 1))
                state.setdefault("labels", row.labels)
                if row.state == "firing":
                    state.setdefault("firing_s", round(now, 1))
        if all(until in s for s in seen.values()):
            break
        time.sleep(poll)
    return seen


def timings(results: dict) -> pd.DataFrame:
    """:func:`alert_times`' answer as a table."""
    rows = [
        {
            "alert": name,
            "labels": r.get("labels", ""),
            "pending after (s)": r.get("pending_s"),
            "firing after (s)": r.get("firing_s"),
        }
        for name, r in results.items()
    ]
    return pd.DataFrame(rows).set_index("alert")
