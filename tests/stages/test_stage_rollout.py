"""Stage 12, rollout: hot reload, the admin endpoint's checks, shadow scoring and the canary,
in-process (start_stage("rollout")). The reload under load with real processes is in
tests/e2e/test_reload_under_load.py; the parts alone in tests/unit/test_rollout.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentiment_model import Prediction, load_model
from serving.logs import flush_logs

STAGE = "rollout"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXTS = ["A wonderful, moving film.", "Terrible and boring.", "Café crème, naïve!", "ok"]


def samples(client, name: str) -> dict[tuple, float]:
    """Every sample of metric family ``name`` (labels as sorted tuples) from /metrics."""
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == name:
                found[tuple(sorted(s.labels.items()))] = s.value
    return found


def events(log_path: Path, event: str) -> list[dict]:
    flush_logs()
    lines = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line["event"] == event]


@pytest.fixture
def models_root(tmp_path, small_model_dir, second_model_dir) -> Path:
    """A models root of the two artifacts (copies) and ``current``, a symlink to the first."""
    root = tmp_path / "models"
    root.mkdir()
    first = shutil.copytree(small_model_dir, root / small_model_dir.name)
    shutil.copytree(second_model_dir, root / second_model_dir.name)
    (root / "current").symlink_to(first.name)
    return root


def switch(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically (a new link renamed over the old, as a mounted
    volume's update is)."""
    new = link.with_name(link.name + ".new")
    new.symlink_to(target)
    new.replace(link)


def version_of(path: Path) -> str:
    return load_model(path).version


# --- Hot reload ------------------------------------------------------------------------------
def test_sighup_reloads_the_configured_source_and_everything_follows(
    start_stage, tmp_path, models_root, small_model_dir, second_model_dir
):
    old, new = version_of(small_model_dir), version_of(second_model_dir)
    log_path = tmp_path / "r.log"
    with start_stage(STAGE, model_dir=models_root / "current", log_path=log_path) as client:
        assert client.post("/predict", json={"text": "fine"}).json()["model_version"] == old
        switch(models_root / "current", second_model_dir.name)
        loop = client.portal.call(asyncio.get_running_loop)  # the app's event loop
        client.app.state.rollout.on_sighup(loop)()  # what the SIGHUP handler calls
        start_stage.wait_until(lambda: client.get("/health").json()["model_version"] == new, "swap")
        answer = client.post("/predict", json={"text": "fine"}).json()
        batch = client.post("/predict/batch", json={"texts": TEXTS}).json()
        assert answer["model_version"] == batch["model_version"] == new
        assert client.get("/model").json()["version"] == new
        info = samples(client, "model_info")
        assert [dict(k)["version"] for k, v in info.items() if v == 1] == [new]
        assert samples(client, "inference_model_reloads_total") == {
            (("outcome", "success"),): 1.0,
            (("outcome", "failure"),): 0.0,
        }
        versions = samples(client, "inference_version_requests_total")
        assert versions[(("role", "stable"), ("version", old))] == 1
        assert versions[(("role", "stable"), ("version", new))] == 2
    [started] = events(log_path, "model_reload_started")
    [done] = events(log_path, "model_reloaded")
    assert started["trigger"] == "signal" and started["model_version"] == old
    assert (done["model_version"], done["previous_version"]) == (new, old)


def test_a_candidate_that_fails_verification_leaves_the_old_model_serving(
    start_stage, tmp_path, models_root, small_model_dir, second_model_dir
):
    old = version_of(small_model_dir)
    broken = models_root / second_model_dir.name / "model.skops"
    broken.write_bytes(broken.read_bytes()[:-10] + b"0123456789")  # checksum no longer matches
    log_path = tmp_path / "r.log"
    settings = {"model_dir": models_root / "current", "log_path": log_path, "admin_token": TOKEN}
    with start_stage(STAGE, **settings) as client:
        switch(models_root / "current", second_model_dir.name)
        answer = client.post("/admin/reload", headers=AUTH)
        assert answer.status_code == 422
        assert "sha256" in answer.json()["detail"] and str(tmp_path) not in answer.text
        assert client.post("/predict", json={"text": "fine"}).json()["model_version"] == old
        assert client.get("/ready").status_code == 200
        assert samples(client, "inference_model_reloads_total")[(("outcome", "failure"),)] == 1
    [failed] = events(log_path, "model_reload_failed")
    assert failed["error_type"] == "ChecksumMismatchError" and "sha256" in failed["reason"]
    assert failed["model_version"] == old and failed["trigger"] == "admin"


def test_a_candidate_that_gets_the_probes_wrong_is_refused(start_stage, models_root):
    def inverted(path=None):
        model = load_model(path)
        if "current" not in str(path):  # every answer the wrong way round
            predict = model.predict
            flip = dict(zip(model.labels, model.labels[::-1], strict=True))
            model.predict = lambda texts: [
                Prediction(flip[p.label], p.score) for p in predict(texts)
            ]
        return model

    settings = {"model_dir": models_root / "current", "admin_token": TOKEN}
    with start_stage(STAGE, load_model=inverted, **settings) as client:
        other = next(p for p in models_root.iterdir() if p.name not in ("current",))
        answer = client.post("/admin/reload", headers=AUTH, json={"model_dir": str(other)})
        assert answer.status_code == 422 and "probe" in answer.json()["detail"]


def test_admin_reload_answers_the_new_and_previous_versions(
    start_stage, models_root, small_model_dir, second_model_dir
):
    old, new = version_of(small_model_dir), version_of(second_model_dir)
    settings = {"model_dir": models_root / "current", "admin_token": TOKEN}
    with start_stage(STAGE, **settings) as client:
        target = str(models_root / second_model_dir.name)
        answer = client.post("/admin/reload", headers=AUTH, json={"model_dir": target})
        assert answer.status_code == 200
        assert answer.json() == {"model_version": new, "previous_version": old}
        assert client.post("/predict", json={"text": "x"}).json()["model_version"] == new
        # An empty body (and {}) reads the configured source: back to the first model.
        assert client.post("/admin/reload", headers=AUTH).json()["model_version"] == old
        assert client.post("/admin/reload", headers=AUTH, json={}).json()["model_version"] == old


def test_admin_reload_is_off_without_a_token(start_stage):
    with start_stage(STAGE) as client:
        assert client.post("/admin/reload", headers=AUTH).status_code == 404
        assert client.post("/admin/reload").status_code == 404


@pytest.mark.parametrize(
    "headers,status",
    [
        ({}, 401),
        ({"Authorization": TOKEN}, 401),  # no scheme
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403),
        ({"Authorization": f"bearer {TOKEN}"}, 200),  # the scheme is case-insensitive
    ],
)
def test_admin_reload_needs_the_bearer_token(start_stage, headers, status):
    with start_stage(STAGE, admin_token=TOKEN) as client:
        answer = client.post("/admin/reload", headers=headers)
        assert answer.status_code == status, answer.text
        if status == 401:
            assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "body,problem",
    [
        (b"not json", "not JSON"),
        (b"[" * 100_000, "not JSON"),  # too deep for the parser: still the caller's error
        (b"[1, 2]", "must be"),
        (b'{"model_dir": "x", "other": 1}', "must be"),
        (b'{"model_dir": 3}', "path string"),
        (b'{"model_dir": ""}', "path string"),
        (b'{"model_dir": "/etc"}', "outside"),
        (b'{"model_dir": "MODELS/../../.."}', "outside"),
        (b'{"model_dir": "MODELS/nothing-here"}', "does not exist"),
    ],
)
def test_admin_reload_refuses_each_bad_body(start_stage, models_root, body, problem):
    settings = {"model_dir": models_root / "current", "admin_token": TOKEN}
    with start_stage(STAGE, **settings) as client:
        before = client.get("/health").json()["model_version"]
        body = body.replace(b"MODELS", str(models_root).encode())
        answer = client.post("/admin/reload", headers=AUTH, content=body)
        assert answer.status_code == 422 and problem in answer.json()["detail"], answer.text
        assert client.get("/health").json()["model_version"] == before


def test_a_second_reload_while_one_runs_gets_409(start_stage, models_root):
    release = threading.Event()

    def slow(path=None):
        if "current" not in str(path):
            release.wait(10)
        return load_model(path)

    settings = {"model_dir": models_root / "current", "admin_token": TOKEN}
    with start_stage(STAGE, load_model=slow, **settings) as client:
        other = next(p for p in models_root.iterdir() if p.name != "current")
        first: list = []
        t = threading.Thread(
            target=lambda: first.append(
                client.post("/admin/reload", headers=AUTH, json={"model_dir": str(other)})
            )
        )
        t.start()
        start_stage.wait_until(lambda: client.app.state.rollout.lock.locked(), "reload started")
        second = client.post("/admin/reload", headers=AUTH, json={"model_dir": str(other)})
        assert second.status_code == 409 and "already running" in second.json()["detail"]
        assert client.post("/predict", json={"text": "ok"}).status_code == 200  # still serving
        release.set()
        t.join(20)
        assert first[0].status_code == 200


# --- Shadow ----------------------------------------------------------------------------------
def test_shadow_never_changes_an_answer_and_reports_agreement(
    start_stage, small_model_dir, second_model_dir
):
    with start_stage(STAGE) as client:
        plain = [client.post("/predict", json={"text": t}).json() for t in TEXTS]
    settings = {"shadow_model_dir": second_model_dir, "shadow_fraction": 1.0}
    with start_stage(STAGE, **settings) as client:
        shadowed = [client.post("/predict", json={"text": t}).json() for t in TEXTS]
        batch = client.post("/predict/batch", json={"texts": TEXTS}).json()
        rollout = client.app.state.rollout
        start_stage.wait_until(lambda: rollout.shadow.scored == 2 * len(TEXTS), "shadow scored")
        agreement = samples(client, "inference_shadow_agreement_total")
        differences = samples(client, "inference_shadow_score_difference_count")
    for a, b in zip(plain, shadowed, strict=True):
        assert (a["label"], a["score"], a["model_version"]) == (
            b["label"],
            b["score"],
            b["model_version"],
        )
    assert [p["label"] for p in batch["predictions"]] == [a["label"] for a in plain]
    assert batch["model_version"] == version_of(small_model_dir)  # never the shadow's
    assert sum(agreement.values()) == 2 * len(TEXTS) == differences[()]
    assert agreement[(("outcome", "agree"),)] >= 4  # two similar models mostly agree


def test_a_slow_shadow_delays_no_answer(start_stage, second_model_dir):
    hang = threading.Event()

    def loader(path=None):
        model = load_model(path)
        if path == second_model_dir:
            predict = model.predict

            def stuck(texts):
                if hang.is_set():
                    time.sleep(10)  # the shadow thread is stuck; serving must not notice
                return predict(texts)

            model.predict = stuck
        return model

    settings = {"shadow_model_dir": second_model_dir, "shadow_fraction": 1.0}
    with start_stage(STAGE, load_model=loader, **settings) as client:
        hang.set()
        started = time.monotonic()
        for text in TEXTS * 5:
            assert client.post("/predict", json={"text": text}).status_code == 200
        assert time.monotonic() - started < 5
        assert client.app.state.rollout.shadow.scored == 0


def test_a_shadow_that_fails_its_checks_is_left_out(start_stage, tmp_path, models_root):
    missing = models_root / "nothing-here"
    log_path = tmp_path / "r.log"
    with start_stage(
        STAGE, shadow_model_dir=missing, shadow_fraction=0.5, log_path=log_path
    ) as client:
        assert client.app.state.rollout.shadow is None
        assert client.post("/predict", json={"text": "ok"}).status_code == 200
    [failed] = events(log_path, "model_load_failed")
    assert failed["role"] == "shadow"


# --- Canary ----------------------------------------------------------------------------------
def test_canary_answers_its_share_the_same_way_for_the_same_key(
    start_stage, small_model_dir, second_model_dir
):
    stable, canary = version_of(small_model_dir), version_of(second_model_dir)
    settings = {"canary_model_dir": second_model_dir, "canary_fraction": 0.5}
    with start_stage(STAGE, **settings) as client:
        seen: dict[str, set[str]] = {}
        for key in [f"user-{i}" for i in range(40)]:
            for _ in range(3):
                answer = client.post("/predict", json={"text": "ok"}, headers={"X-Canary-Key": key})
                seen.setdefault(key, set()).add(answer.json()["model_version"])
        batch = client.post(
            "/predict/batch", json={"texts": TEXTS}, headers={"X-Canary-Key": "user-1"}
        )
        counted = samples(client, "inference_version_requests_total")
    assert all(len(versions) == 1 for versions in seen.values())  # one caller, one version
    shares = [v for versions in seen.values() for v in versions]
    assert 8 <= shares.count(canary) <= 32 and set(shares) == {stable, canary}
    assert batch.json()["model_version"] in seen["user-1"]
    assert counted[(("role", "canary"), ("version", canary))] >= 3 * 8


def test_without_a_key_the_request_id_decides(start_stage, second_model_dir):
    settings = {"canary_model_dir": second_model_dir, "canary_fraction": 0.5}
    with start_stage(STAGE, **settings) as client:
        by_id = {}
        for i in range(20):
            headers = {"X-Request-ID": f"req-{i}"}
            versions = {
                client.post("/predict", json={"text": "ok"}, headers=headers).json()[
                    "model_version"
                ]
                for _ in range(2)
            }
            assert len(versions) == 1
            by_id[i] = versions.pop()
        assert len(set(by_id.values())) == 2


@pytest.mark.parametrize(
    "name,value", [("SHADOW_FRACTION", -0.1), ("SHADOW_FRACTION", 1.5), ("CANARY_FRACTION", 2)]
)
def test_a_fraction_outside_0_1_stops_start_up(start_stage, name, value):
    with pytest.raises(SystemExit, match=f"INFERENCE_{name}"):
        start_stage.app(STAGE, **{name: value})


def test_the_admin_token_is_never_logged(start_stage, tmp_path):
    log_path = tmp_path / "r.log"
    with start_stage(STAGE, admin_token=TOKEN, log_path=log_path):
        pass
    flush_logs()
    assert TOKEN not in log_path.read_text(encoding="utf-8")


# --- POST /admin/canary: the canary's share at run time -------------------------------------
def canary_settings(second_model_dir, fraction: float = 0.5, **more) -> dict:
    return {
        "canary_model_dir": second_model_dir,
        "canary_fraction": fraction,
        "admin_token": TOKEN,
    } | more


def keyed(client, key: str) -> str:
    """The version that answers a caller with ``key``."""
    answer = client.post("/predict", json={"text": "ok"}, headers={"X-Canary-Key": key})
    assert answer.status_code == 200, answer.text
    return answer.json()["model_version"]


def test_admin_canary_is_off_without_a_token(start_stage, second_model_dir):
    settings = canary_settings(second_model_dir, admin_token=None)
    with start_stage(STAGE, **settings) as client:
        assert client.post("/admin/canary", headers=AUTH, json={"fraction": 0}).status_code == 404
        assert client.app.state.rollout.canary_fraction == 0.5


def test_admin_canary_without_a_bearer_token_is_401(start_stage, second_model_dir):
    with start_stage(STAGE, **canary_settings(second_model_dir)) as client:
        answer = client.post("/admin/canary", json={"fraction": 0})
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert client.app.state.rollout.canary_fraction == 0.5


def test_admin_canary_with_a_wrong_token_is_403(start_stage, second_model_dir):
    with start_stage(STAGE, **canary_settings(second_model_dir)) as client:
        wrong = {"Authorization": f"Bearer {TOKEN}x"}
        assert client.post("/admin/canary", headers=wrong, json={"fraction": 0}).status_code == 403
        assert client.app.state.rollout.canary_fraction == 0.5


def test_admin_canary_without_a_canary_is_409_and_says_so(start_stage, tmp_path):
    log_path = tmp_path / "r.log"
    with start_stage(STAGE, admin_token=TOKEN, log_path=log_path) as client:
        answer = client.post("/admin/canary", headers=AUTH, json={"fraction": 0})
        assert answer.status_code == 409 and "no canary model" in answer.json()["detail"]
        assert samples(client, "inference_canary_fraction") == {(): 0.0}
    assert events(log_path, "canary_fraction_changed") == []


@pytest.mark.parametrize(
    "body,problem",
    [
        (b"", "not JSON"),
        (b"not json", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[0.5]", "must be"),
        (b"{}", "must be"),
        (b'{"fraction": 0.5, "other": 1}', "must be"),
        (b'{"fraction": "0.5"}', "a number"),
        (b'{"fraction": true}', "a number"),
        (b'{"fraction": null}', "a number"),
        (b'{"fraction": -0.1}', "from 0 to 1"),
        (b'{"fraction": 1.01}', "from 0 to 1"),
        (b'{"fraction": NaN}', "from 0 to 1"),
        (b'{"fraction": Infinity}', "from 0 to 1"),
        (b'{"fraction": 1' + b"0" * 400 + b"}", "from 0 to 1"),  # never made a float
    ],
)
def test_admin_canary_refuses_each_bad_body(start_stage, second_model_dir, body, problem):
    with start_stage(STAGE, **canary_settings(second_model_dir)) as client:
        answer = client.post("/admin/canary", headers=AUTH, content=body)
        assert answer.status_code == 422 and problem in answer.json()["detail"], answer.text
        assert client.app.state.rollout.canary_fraction == 0.5


def test_admin_canary_sets_the_share_the_gauge_and_the_log(
    start_stage, tmp_path, small_model_dir, second_model_dir
):
    stable, canary = version_of(small_model_dir), version_of(second_model_dir)
    log_path = tmp_path / "r.log"
    keys = [f"user-{i}" for i in range(40)]
    with start_stage(STAGE, **canary_settings(second_model_dir, log_path=log_path)) as client:
        assert samples(client, "inference_canary_fraction") == {(): 0.5}
        before = {key: keyed(client, key) for key in keys}
        assert set(before.values()) == {stable, canary}
        answer = client.post("/admin/canary", headers=AUTH, json={"fraction": 0})
        assert answer.status_code == 200
        assert answer.json() == {
            "canary_version": canary,
            "fraction": 0.0,
            "previous_fraction": 0.5,
        }
        assert samples(client, "inference_canary_fraction") == {(): 0.0}
        assert {keyed(client, key) for key in keys} == {stable}  # the very next requests
        # And back: an integer is a number too; each key lands where it did before.
        answer = client.post("/admin/canary", headers=AUTH, json={"fraction": 1})
        assert answer.json() == {
            "canary_version": canary,
            "fraction": 1.0,
            "previous_fraction": 0.0,
        }
        assert {keyed(client, key) for key in keys} == {canary}
        client.post("/admin/canary", headers=AUTH, json={"fraction": 0.5})
        assert {key: keyed(client, key) for key in keys} == before
    changes = events(log_path, "canary_fraction_changed")
    assert [(c["previous_fraction"], c["fraction"]) for c in changes] == [
        (0.5, 0.0),
        (0.0, 1.0),
        (1.0, 0.5),
    ]
    assert {(c["trigger"], c["canary_version"]) for c in changes} == {("admin", canary)}


def test_switching_the_canary_off_loses_no_request_it_already_accepted(
    start_stage, small_model_dir, second_model_dir
):
    stable, canary = version_of(small_model_dir), version_of(second_model_dir)
    hold, entered, release = threading.Event(), threading.Event(), threading.Event()

    def loader(path=None):
        model = load_model(path)
        if path == second_model_dir:  # the canary: its batches wait while `hold` is set
            score = model.predict_with_signals

            def held(texts):
                if hold.is_set():
                    entered.set()
                    release.wait(10)
                return score(texts)

            model.predict_with_signals = held
        return model

    settings = canary_settings(second_model_dir, fraction=1.0)
    with start_stage(STAGE, load_model=loader, **settings) as client:
        rollout = client.app.state.rollout
        hold.set()
        answers: dict[str, object] = {}

        def ask(key: str) -> None:
            answers[key] = client.post(
                "/predict", json={"text": "ok"}, headers={"X-Canary-Key": key}
            )

        callers = [threading.Thread(target=ask, args=(f"early-{i}",)) for i in range(6)]
        callers[0].start()  # its batch runs on the canary, held
        start_stage.wait_until(entered.is_set, "the canary's batch started")
        for caller in callers[1:]:
            caller.start()  # queued behind it on the canary's batcher
        start_stage.wait_until(lambda: rollout.canary_batcher.queue_depth == 5, "queued")
        switched = client.post("/admin/canary", headers=AUTH, json={"fraction": 0})
        assert switched.json()["previous_fraction"] == 1.0
        # The next requests go to the stable model, answered while the canary is still held.
        assert {keyed(client, f"late-{i}") for i in range(6)} == {stable}
        assert not answers
        release.set()
        for caller in callers:
            caller.join(20)
        counted = samples(client, "inference_version_requests_total")
    assert sorted(answers) == sorted(f"early-{i}" for i in range(6))
    assert all(a.status_code == 200 for a in answers.values())  # none lost
    assert {a.json()["model_version"] for a in answers.values()} == {canary}
    assert counted[(("role", "canary"), ("version", canary))] == 6
    assert counted[(("role", "stable"), ("version", stable))] == 6
