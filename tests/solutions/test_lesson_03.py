"""Lesson 03's answers: the PromQL (promtool), the request-id rule, the text-length buckets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from answers import solution
from missing_tool import missing_tool
from prometheus_client import CollectorRegistry

from monitoring.prom import find_binary

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "lessons" / "03_metrics" / "solutions"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_exercise_1_the_queries_give_p95_and_4xx_share():
    promtool = find_binary("promtool")
    if promtool is None:
        missing_tool("promtool not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "test", "rules", str(SOLUTIONS / "promql_test.yml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("unsafe", ["a" * 200, "my id", "id\tx", ""])
def test_exercise_2_an_unsafe_request_id_is_replaced(start_stage, unsafe):
    with start_stage("metrics") as client:
        r = client.post("/predict", json={"text": "good"}, headers={"X-Request-ID": unsafe})
    assert r.status_code == 200
    assert UUID.fullmatch(r.headers["x-request-id"]), r.headers["x-request-id"]


def test_exercise_2_a_safe_request_id_is_echoed(start_stage):
    with start_stage("metrics") as client:
        r = client.post("/predict", json={"text": "good"}, headers={"X-Request-ID": "a" * 128})
    assert r.headers["x-request-id"] == "a" * 128


def test_exercise_3_the_buckets_fit_the_data(splits):
    module = solution("03_metrics", "text_chars")
    registry = CollectorRegistry()
    histogram = module.text_chars_histogram(registry)
    lengths = splits.test["text"].str.len()
    for n in lengths:
        histogram.observe(n)
    buckets = module.BUCKETS
    assert buckets[-1] == 10_000  # the server's MAX_TEXT_CHARS: nothing valid above it
    [family] = registry.collect()
    per_bucket = [s.value for s in family.samples if s.name.endswith("_bucket")]
    assert per_bucket[-1] == per_bucket[-2] == len(lengths)  # no text beyond the last bucket

    def bucket_of(value: float) -> int:
        return next(i for i, upper in enumerate(buckets) if value <= upper)

    by_source = splits.test.assign(n=lengths).groupby("source")["n"]
    rt, imdb = by_source.get_group("rotten_tomatoes"), by_source.get_group("imdb")
    assert bucket_of(rt.median()) < bucket_of(imdb.median())  # the two sources apart
    assert bucket_of(rt.quantile(0.99)) - bucket_of(rt.quantile(0.01)) >= 2  # RT resolved
    assert bucket_of(imdb.quantile(0.99)) - bucket_of(imdb.median()) >= 2  # IMDB's tail too
