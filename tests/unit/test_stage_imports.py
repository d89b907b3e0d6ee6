"""Each stage imports only what has been taught: its in-repo import closure against the lesson map.

For every stage a fresh interpreter imports the stage's file, starts its app (lifespan included,
so what it imports while loading, such as the direct scorer, counts), answers one /predict and
lists the in-repo modules it loaded (``sentiment_model.*``, ``serving.*``). The lesson map is
``Stage.teaches`` in serving/stages.py: a stage may load what its lesson or an earlier one
teaches and nothing else, and it must load every module its own lesson teaches.

One interpreter loads the third-party libraries once and forks a child per stage, so the whole
check costs a few seconds.
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
    "serving.context": "serving.errors adds the request id (stage 3) to an error when there is one",
    "sentiment_model.signals": "the direct scorer (stage 7) imports the signals it can compute "
    "for stage 11",
}
_EARLY = {
    "validated": ("serving.context",),
    "fast": ("sentiment_model.signals",),
}
KNOWN_EARLY: dict[str, dict[str, str]] = {
    stage: {module: _WHY[module] for module in modules} for stage, modules in _EARLY.items()
}

# One interpreter imports the third-party libraries once (no in-repo module), then forks a child
# per stage: each child imports the stage file, starts its app, predicts once and prints the
# in-repo modules it has loaded. Without os.fork (Windows) each stage gets an interpreter.
PROBE = r"""
import importlib.util, json, os, sys, time

import fastapi.testclient, numpy, prometheus_client, pydantic_settings, skops.io, sklearn.pipeline


def probe(name, path):
    os.environ["INFERENCE_LOG_PATH"] = os.path.join(sys.argv[1], f"{name}.log")
    spec = importlib.util.spec_from_file_location("stage_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with fastapi.testclient.TestClient(module.app) as client:
        paths = {route.path for route in module.app.routes}
        deadline = time.monotonic() + 60
        while "/ready" in paths and client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.02)
        assert client.post("/predict", json={"text": "a fine film"}).status_code == 200
    in_repo = [n for n in sys.modules if n.split(".")[0] in ("serving", "sentiment_model")]
    print(name, json.dumps(sorted(in_repo)), flush=True)


assert not [n for n in sys.modules if n.split(".")[0] in ("serving", "sentiment_model")]
for arg in sys.argv[2:]:
    name, path = arg.split("=", 1)
    if not hasattr(os, "fork"):  # Windows: the test passes one stage per interpreter
        probe(name, path)
        continue
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            probe(name, path)
            code = 0
        finally:
            os._exit(code)  # the traceback, if any, is already on stderr
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"{name}: the probe failed"
"""


def _probe(args: list[str], env: dict[str, str]) -> dict[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split(" ", 1) for line in done.stdout.splitlines()]  # and the apps' log lines
    return {line[0]: set(json.loads(line[1])) for line in lines if line[0] in STAGES}


@pytest.fixture(scope="module")
def loaded(small_model_dir: Path, tmp_path_factory) -> dict[str, set[str]]:
    """Stage name -> the in-repo modules its running server had loaded."""
    env = os.environ | {"INFERENCE_MODEL_DIR": str(small_model_dir), "OPENBLAS_NUM_THREADS": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    scratch = str(tmp_path_factory.mktemp("imports"))
    args = [
        f"{name}={ROOT / stage.app_dir / stage.app.split(':')[0].replace('.', '/')}.py"
        for name, stage in STAGES.items()
    ]
    if hasattr(os, "fork"):
        result = _probe([scratch, *args], env)
    else:
        result = {}
        for arg in args:
            result |= _probe([scratch, arg], env)
    assert set(result) == set(STAGES), result
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
