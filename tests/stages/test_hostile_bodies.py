"""Hostile request bodies and the honesty of answers, logs and metrics (final stage, in-process).

Error bodies never echo the input; non-finite numbers, lone surrogates, key floods and deep
nesting are 422; no raw text reaches the log; texts whose caller timed out never reach the
model. Deterministic: no timing decides an outcome.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from gating import GatedModel, metric, run_scenario, stages_from, until

from sentiment_model import load_model
from serving.logs import flush_logs

SECRET = "my-private-review-words"
HEADERS = {"Content-Type": "application/json"}


def log_text(tmp_path: Path) -> str:
    flush_logs()  # the final stage writes its log in a background thread
    return (tmp_path / "requests.log").read_text(encoding="utf-8")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize(
    "template",
    ['{"text": %s}', '{"text": "fine", "x": %s}', '{"texts": [%s]}', '{"texts": ["a", %s]}'],
)
def test_non_finite_numbers_are_422(client, token, template):
    path = "/predict/batch" if "texts" in template else "/predict"
    r = client.post(path, content=template % token, headers=HEADERS)
    assert r.status_code == 422, r.text
    assert "inf" not in r.text.lower() and "nan" not in r.text.lower()


@pytest.mark.parametrize(
    "raw",
    [
        r'{"text": "\ud800"}',
        r'{"text": "fine \udfff end"}',
        r'{"\ud800": "x"}',
        r'{"texts": ["ok", "\udc00"]}',
    ],
)
def test_lone_surrogates_are_422_not_500(client, raw, tmp_path):
    path = "/predict/batch" if "texts" in raw else "/predict"
    r = client.post(path, content=raw, headers=HEADERS)
    assert r.status_code == 422, r.text
    r.json()  # valid UTF-8 JSON, the surrogate escaped
    assert "Traceback" not in log_text(tmp_path)


def test_unknown_key_flood_gets_a_small_answer_and_a_small_log_line(client, tmp_path):
    keys = {f"k{i:05d}": 1 for i in range(90_000)}
    body = json.dumps({"texts": ["fine"]} | keys, separators=(",", ":")).encode()
    assert 900_000 < len(body) < 1_048_576  # just under the default body limit
    # /predict/batch: /predict refuses a body this size before reading it (413, see below).
    r = client.post("/predict/batch", content=body, headers=HEADERS)
    assert r.status_code == 422 and len(r.content) < 4_000
    [error] = r.json()["detail"]  # one error, not 90,000 (each costs time to build)
    assert error["msg"] == "Value error, 90000 unknown field(s); accepted: texts"
    [line] = [x for x in log_text(tmp_path).splitlines() if json.loads(x).get("status") == 422]
    assert len(line) < 2_000


def test_error_bodies_never_echo_the_input(client, tmp_path):
    long_text = SECRET + " " + "x" * 10_000
    # names_a_key: the answer names an unknown key on purpose (serving/schemas.py, clipped to
    # 64 characters by serving/errors.clip), so SECRET, used as a key, appears once, as its name.
    for path, body, names_a_key in (
        ("/predict", {"text": long_text}, False),
        ("/predict", {"text": 5, SECRET: SECRET}, True),
        ("/predict/batch", {"texts": [long_text, 7]}, False),
        ("/predict", {"text": " " * 50}, False),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 422
        assert len(r.text) < 2_000, r.text
        assert r.text.count(SECRET) <= (1 if names_a_key else 0), r.text
        assert "input" not in r.json()["detail"][0] and "xxxxxxxxxx" not in r.text
    assert "xxxxxxxxxx" not in log_text(tmp_path)


def test_no_raw_text_in_the_log_even_when_the_model_fails(start_stage, tmp_path):
    def load(path):
        model = load_model(path)

        def predict(texts):
            raise ValueError(f"cannot score {texts!r}")  # a message that quotes the input

        model.predict = model.predict_with_signals = predict  # whichever the stage calls
        return model

    with start_stage(load_model=load, raise_server_exceptions=False) as c:
        assert c.post("/predict", json={"text": SECRET}).status_code == 500
    text = log_text(tmp_path)
    assert SECRET not in text and "unhandled_error" in text


@pytest.mark.parametrize("stage", stages_from("hardened"))
@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
def test_deep_nesting_is_422(start_stage, stage, depth):
    # 100,000 levels (200 KB) only fit /predict/batch's body limit; /predict answers 413.
    with start_stage(stage) as client:
        for path in ("/predict", "/predict/batch") if depth < 50_000 else ("/predict/batch",):
            r = client.post(path, content="[" * depth + "]" * depth, headers=HEADERS)
            assert r.status_code == 422
            r = client.post(path, content='{"text": ' + "[" * depth + "]" * depth + "}")
            assert r.status_code == 422


def test_duplicate_keys_take_the_last_value(client):
    """The documented choice: like Python's json module (RFC 8259 leaves it open)."""
    raw = '{"text": 5, "text": "a wonderful film"}'
    assert client.post("/predict", content=raw, headers=HEADERS).status_code == 200
    raw = '{"text": "a wonderful film", "text": 5}'
    assert client.post("/predict", content=raw, headers=HEADERS).status_code == 422


def test_413_is_counted_under_its_route_however_it_is_found(start_stage):
    with start_stage(MAX_BODY_BYTES=100, raise_server_exceptions=False) as c:
        app = c.app
        assert c.post("/predict", json={"text": "x" * 200}).status_code == 413  # Content-Length

        def chunks():
            yield b'{"text": "'
            yield b"x" * 200
            yield b'"}'

        r = c.post("/predict", content=chunks(), headers=HEADERS)  # chunked: found while read
        assert r.status_code == 413
    counted = metric(app, "http_requests_total", method="POST", route="/predict", status="413")
    assert counted == 2
    assert metric(app, "http_requests_total", method="POST", route="unmatched", status="413") == 0


@pytest.mark.parametrize("stage", stages_from("hardened"))
def test_docs_are_off_by_default_and_the_schema_stays(start_stage, stage):
    with start_stage(stage) as c:
        assert c.get("/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").status_code == 200
    with start_stage(stage, DOCS="true") as c:
        assert c.get("/docs").status_code == 200


def test_texts_of_timed_out_callers_never_reach_the_model(start_stage):
    """The README's promise, counted: every text the model ran was answered with 200, except
    the one already inside the model when its caller's time ran out."""
    gate = GatedModel()
    app = start_stage.app(REQUEST_TIMEOUT_S=0.2, MAX_BATCH_WAIT_MS=0, load_model=gate.load)
    results: dict = {}

    async def scenario(c):
        holder = asyncio.create_task(c.post("/predict", json={"text": "hold"}))
        await until(gate.entered.is_set)
        waiting = [
            c.post("/predict/batch", json={"texts": [f"late {i}", f"late {i}b"]}) for i in range(10)
        ]
        results["late"] = [r.status_code for r in await asyncio.gather(*waiting)]
        gate.release.set()
        results["holder"] = (await holder).status_code
        after = await c.post("/predict/batch", json={"texts": ["after 1", "after 2"]})
        results["after"] = after.status_code

    run_scenario(app, scenario)
    assert results == {"late": [504] * 10, "holder": 504, "after": 200}
    answered_200 = ["after 1", "after 2"]
    assert gate.texts_run == ["hold", *answered_200]  # none of the 20 late texts ran
    assert metric(app, "inference_dropped_texts_total") == 20
    assert metric(app, "inference_rejections_total", reason="timeout") == 11


def test_fairness_batch_requests_need_room_for_all_their_texts(start_stage):
    """The documented choice under overload: admission counts texts, all-or-nothing, so a
    large batch is refused while single texts still fit (it weighs its texts, no more)."""
    gate = GatedModel()
    app = start_stage.app(MAX_QUEUE=8, MAX_BATCH_ITEMS=8, MAX_BATCH_WAIT_MS=0, load_model=gate.load)
    results: dict = {}

    async def scenario(c):
        holder = asyncio.create_task(c.post("/predict", json={"text": "hold"}))
        await until(gate.entered.is_set)
        batcher = app.state.server.batcher
        single = asyncio.create_task(c.post("/predict", json={"text": "one"}))
        await until(lambda: batcher.queue_depth == 1)  # 1 of 8 slots taken
        results["batch"] = (await c.post("/predict/batch", json={"texts": ["b"] * 8})).status_code
        single_after = asyncio.create_task(c.post("/predict", json={"text": "two"}))
        await until(lambda: batcher.queue_depth == 2)
        gate.release.set()
        results["holder"] = (await holder).status_code
        results["singles"] = [(await single).status_code, (await single_after).status_code]

    run_scenario(app, scenario)
    assert results == {"batch": 503, "holder": 200, "singles": [200, 200]}


def test_hardening_metrics_are_exported_from_the_start(client):
    text = client.get("/metrics").text
    for sample in (
        "inference_dropped_texts_total 0.0",
        "inference_log_lines_lost_total 0.0",
        'inference_limit_events_total{event="header_too_large"} 0.0',
        'inference_limit_events_total{event="body_timeout"} 0.0',
        'inference_limit_events_total{event="connection_refused"} 0.0',
    ):
        assert sample in text, sample


# U+FDFA becomes 18 characters under the vectorizer's NFKD: 556 of them are 10,008 as the
# model reads them, 555 are 9,990.
EXPANDING = "\ufdfa"


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/predict", {"text": EXPANDING * 556}, ["body", "text"]),
        ("/predict", {"text": "a fine film " + EXPANDING * 9_000}, ["body", "text"]),
        ("/predict/batch", {"texts": ["ok", EXPANDING * 9_000]}, ["body", "texts", 1]),
    ],
)
def test_text_that_expands_past_the_limit_once_normalised_is_422(client, path, body, loc):
    """The character limit bounds what the model really processes, not the raw length."""
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["type"] == "string_too_long" and error["loc"] == loc
    assert "10000 characters once normalised" in error["msg"]


def test_text_that_expands_to_just_the_limit_is_answered(client):
    assert client.post("/predict", json={"text": EXPANDING * 555}).status_code == 200
    accented = "Un film émouvant, très réussi. " * 320  # 9,920 characters, accents dropped
    assert client.post("/predict", json={"text": accented}).status_code == 200


@pytest.mark.parametrize("stage", stages_from("hardened"))
def test_a_body_larger_than_its_route_can_need_is_413(start_stage, stage):
    """/predict's limit is its longest text at the worst JSON escape (12 bytes a character),
    /predict/batch's that times MAX_BATCH_ITEMS; MAX_BODY_BYTES stays the outer bound."""
    with start_stage(stage, MAX_TEXT_CHARS=100, MAX_BATCH_ITEMS=4, MAX_QUEUE=8) as c:
        worst = "\U0001f600" * 100  # json.dumps escapes each as a 12-byte surrogate pair
        r = c.post("/predict", content=json.dumps({"text": worst}, indent=4), headers=HEADERS)
        assert r.status_code == 200, r.text  # the largest valid request still fits
        r = c.post("/predict/batch", content=json.dumps({"texts": [worst] * 4}), headers=HEADERS)
        assert r.status_code == 200, r.text
        r = c.post("/predict", content=b'{"text": "' + b"x" * 3_000 + b'"}', headers=HEADERS)
        assert r.status_code == 413
        assert "larger than the limit of 2240 bytes for /predict" in r.json()["detail"]

        def chunks():  # no Content-Length: found while the body is read
            yield b'{"texts": ["'
            yield b"x" * 6_000
            yield b'"]}'

        r = c.post("/predict/batch", content=chunks(), headers=HEADERS)
        assert r.status_code == 413
        assert "limit of 5888 bytes for /predict/batch" in r.json()["detail"]


def test_default_predict_limit_refuses_a_1_mb_flood_unread(client):
    keys = {f"k{i:05d}": 1 for i in range(90_000)}
    body = json.dumps({"text": "fine"} | keys, separators=(",", ":")).encode()
    r = client.post("/predict", content=body, headers=HEADERS)
    assert r.status_code == 413
    assert r.json()["detail"].endswith("larger than the limit of 121040 bytes for /predict")


def flood(unit: bytes, size: int = 1_000_000) -> bytes:
    """``{"texts": [unit, unit, ...]}`` of about ``size`` bytes."""
    return b'{"texts": [' + b",".join([unit] * (size // (len(unit) + 1))) + b"]}"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (flood(b"[]"), "body has more than 64 arrays and objects"),  # 333,000 empty lists
        (flood(b"[" * 900 + b"]" * 900), "body has more than 64 arrays and objects"),
        (
            b'{"texts": ' + b"[" * 9 + b'"a"' + b"]" * 9 + b"}",
            "body is nested more than 8 levels deep",
        ),
    ],
    ids=["333,000 empty lists", "580 arrays 900 deep", "10 levels"],
)
def test_nested_or_branched_bodies_are_422_before_parsing(client, tmp_path, body, problem):
    """Refused from a count of the body's brackets (serving/jsonbody.py), before json.loads
    builds a single list: the same 422 as a body too deep for json.loads."""
    r = client.post("/predict/batch", content=body, headers=HEADERS)
    assert r.status_code == 422
    assert r.json()["detail"] == [{"type": "json_invalid", "loc": ["body"], "msg": problem}]
    assert problem in log_text(tmp_path)


def test_a_shallow_mistake_still_gets_the_field_level_message(client):
    r = client.post("/predict/batch", json={"texts": [["a", "b"], "[[[[[[[[[[ in a text ]"]})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "texts", 0] and error["type"] == "string_type"


def test_a_long_path_is_clipped_in_the_access_log(client, tmp_path):
    """2,000 requests with 32 KB paths once rotated every log file away in 1.5 s."""
    path = "/" + "a" * 32_000
    assert client.get(path).status_code == 404
    assert client.post(path + "/predict", json={"text": "x"}).status_code == 404
    lines = [json.loads(x) for x in log_text(tmp_path).splitlines()]
    clipped = [x for x in lines if x.get("event") == "request" and x["status"] == 404]
    assert len(clipped) == 2
    for line in clipped:
        assert line["path"] == "/" + "a" * 199 + "..." and line["path_chars"] > 32_000
        assert len(json.dumps(line)) < 1_000
    assert all(len(x) < 2_000 for x in log_text(tmp_path).splitlines())
