"""Each stage imports only what has been taught: its in-repo import closure against the lesson map.

For every stage a fresh interpreter imports the stage's file, starts its app (lifespan included,
so what it imports while loading, such as the direct scorer, counts), answers one /predict and
lists the in-repo modules it loaded (``sentiment_model.*``, ``serving.*``). The lesson map is
``Stage.teaches`` in serving/stages.py: a stage may load what its lesson or an earlier one
teaches and nothing else, and it must load every module its own lesson teaches.

The interpreters run side by side (one per stage), so the whole check costs a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.stages import STAGES

ROOT = Path(__file__).resolve().parents[2]
IN_REPO = ("sentiment_model", "serving")

# What a stage loads although a later lesson teaches it, and why. Each entry is checked to
# still happen: once the code stops loading the module early, the entry must go.
_WHY = {
    "serving.context": "serving.asgi and serving.errors read the request context (stage 3)",
    "serving.metrics": "serving.asgi holds BodyLimitMiddleware next to ObservabilityMiddleware",
    "serving.multiprocess": "serving.metrics finds the several-workers metrics directory there",
    "serving.jsonbody": "serving.errors answers the JSON shape check's BodyShapeError",
}
_EARLY = {
    "validated": ("serving.context", "serving.metrics", "serving.multiprocess", "serving.jsonbody"),
    "metrics": ("serving.multiprocess", "serving.jsonbody"),
    "batched": ("serving.multiprocess", "serving.jsonbody"),
    "lifecycle": ("serving.jsonbody",),
}
KNOWN_EARLY: dict[str, dict[str, str]] = {
    stage: {module: _WHY[module] for module in modules} for stage, modules in _EARLY.items()
}

# Run in a fresh interpreter: import the stage file, start its app, predict once, list modules.
PROBE = r"""
import importlib.util, json, sys, time
from fastapi.testclient import TestClient

spec = importlib.util.spec_from_file_location("stage_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with TestClient(module.app) as client:
    paths = {route.path for route in module.app.routes}
    deadline = time.monotonic() + 60
    while "/ready" in paths and client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "not ready"
        time.sleep(0.02)
    assert client.post("/predict", json={"text": "a fine film"}).status_code == 200
in_repo = [n for n in sys.modules if n.split(".")[0] in ("serving", "sentiment_model")]
print(json.dumps(sorted(in_repo)))
"""


@pytest.fixture(scope="module")
def loaded(small_model_dir: Path, tmp_path_factory) -> dict[str, set[str]]:
    """Stage name -> the in-repo modules its running server had loaded."""
    scratch = tmp_path_factory.mktemp("imports")
    procs = {}
    for name, stage in STAGES.items():
        env = os.environ | {
            "INFERENCE_MODEL_DIR": str(small_model_dir),
            "INFERENCE_LOG_PATH": str(scratch / f"{name}.log"),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        path = ROOT / stage.app_dir / stage.app.split(":")[0].replace(".", "/")
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", PROBE, f"{path}.py"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    result = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}: {err[-2000:]}"
        result[name] = set(json.loads(out.strip().splitlines()[-1]))
    return result


def taught_up_to(name: str) -> set[str]:
    """Every module taught by ``name``'s lesson or an earlier one."""
    names = list(STAGES)
    return {m for s in names[: names.index(name) + 1] for m in STAGES[s].teaches}


def test_the_lesson_map_teaches_each_module_once() -> None:
    taught = [m for stage in STAGES.values() for m in stage.teaches]
    assert len(taught) == len(set(taught)), sorted(m for m in taught if taught.count(m) > 1)
    assert all(m.split(".")[0] in IN_REPO for m in taught)
    assert set(KNOWN_EARLY) <= set(STAGES)


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_loads_only_what_has_been_taught(loaded, name: str) -> None:
    early = set(KNOWN_EARLY.get(name, {}))
    untaught = loaded[name] - taught_up_to(name)
    assert untaught == early, f"{name} loads modules no lesson up to it teaches: {untaught}"


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_loads_every_module_its_lesson_teaches(loaded, name: str) -> None:
    missing = set(STAGES[name].teaches) - loaded[name]
    assert not missing, f"the map says {name} teaches {missing}, but its server never loads them"
