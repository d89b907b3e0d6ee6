"""Stage 11 with two worker processes: the signal histograms and the feedback counter are summed
over the workers exactly, and feedback is taken only by the worker that answered the prediction;
another worker answers 404 and says so (serving/monitoring.py)."""

from __future__ import annotations

import threading

import httpx
import pytest
from multiworker import WorkerServer

from serving.stages import STAGES

pytestmark = pytest.mark.slow


def each_on_a_new_connection(url: str, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """POST every ``(path, body)`` from 4 threads, a new connection each (so the kernel spreads
    them over the workers); answers in request order."""
    answers: list[httpx.Response | None] = [None] * len(requests)
    todo = iter(range(len(requests)))
    lock = threading.Lock()

    def client() -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=url, timeout=10, limits=limits) as http:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                path, body = requests[i]
                answers[i] = http.post(path, json=body)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


def test_signals_are_summed_and_feedback_reaches_only_the_worker_that_answered(
    tmp_path, small_model_dir
):
    server = WorkerServer(
        tmp_path,
        workers=2,
        env={"MODEL_DIR": small_model_dir},
        args=("--app-dir", STAGES["monitored"].app_dir),  # the image's command, stage 11
    ).start()
    try:
        n = 60
        predictions = each_on_a_new_connection(
            server.url, [("/predict", {"text": f"review {i}: a good film"}) for i in range(n)]
        )
        assert {r.status_code for r in predictions} == {200}
        assert len({r.headers["x-request-id"] for r in predictions}) == n
        feedback = each_on_a_new_connection(
            server.url,
            [
                ("/feedback", {"request_id": r.headers["x-request-id"], "label": "positive"})
                for r in predictions
            ],
        )
        batch = httpx.post(server.url + "/predict/batch", json={"texts": ["good", "bad", "meh"]})
        assert batch.status_code == 200  # its signals: one update per bucket used (observe_all)
        statuses = [r.status_code for r in feedback]
        taken = statuses.count(200)
        assert set(statuses) <= {200, 404}, statuses
        assert 0 < taken < n, statuses  # with two workers, some land elsewhere (p ~ 2**-59)
        for r in feedback:
            if r.status_code == 404:
                assert "not known to this worker" in r.json()["detail"]
        for _ in range(6):  # whichever worker answers the scrape, the same sums
            sample = server.scrape()
            for name in (
                "inference_prediction_confidence",
                "inference_input_tokens",
                "inference_unknown_token_ratio",
            ):
                assert sample[(f"{name}_count", ())] == n + 3, name
                assert sample[(f"{name}_bucket", (("le", "+Inf"),))] == n + 3, name
            outcomes = {
                o: sample[("inference_feedback_total", (("outcome", o),))]
                for o in ("correct", "wrong")
            }
            assert outcomes["correct"] + outcomes["wrong"] == taken
            correct = sum(r.json()["correct"] for r in feedback if r.status_code == 200)
            assert outcomes["correct"] == correct
    finally:
        server.stop()
