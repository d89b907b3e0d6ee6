"""Shared fixtures: a small model trained in seconds, and ``start_stage``, which starts any server
stage in-process with its own settings and model loader.

And a guard: the test run (notebooks included) must leave the student's default model alone.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from sentiment_model.artifact import MODELS_ROOT, export_model
from sentiment_model.data import Splits, load_splits
from sentiment_model.train import data_summary, fit
from serving.settings import load_settings
from serving.stages import FINAL_STAGE, STAGES

_MODELS_BEFORE = pytest.StashKey[tuple[str, list[str]]]()


def _models_state() -> tuple[str, list[str]]:
    """What a test must not change: models/LATEST, the artifacts next to it, the files in logs/."""
    latest = MODELS_ROOT / "LATEST"
    names = [
        f"{folder.name}/{p.name}"
        for folder in (MODELS_ROOT, MODELS_ROOT.parent / "logs")
        if folder.is_dir()
        for p in sorted(folder.iterdir())
    ]
    return (latest.read_text() if latest.is_file() else "", names)


TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs in the main lane of the whole suite (tasks.py test runs the drill
    notebooks in a lane of their own: notebooks/conftest.py)."""
    for item in items:
        if TESTS in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("main"))


def pytest_configure(config: pytest.Config) -> None:
    """Note the state of models/ and logs/ before any test runs."""
    config.stash[_MODELS_BEFORE] = _models_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if it changed models/LATEST, or added or removed an artifact or a log file."""
    before = session.config.stash.get(_MODELS_BEFORE, None)
    if before is not None and _models_state() != before:
        message = f"the tests changed models/ or logs/: {before} -> {_models_state()}"
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("!", message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def splits() -> Splits:
    """The course's real train / validation / test split."""
    return load_splits()


@pytest.fixture(scope="session")
def sample(splits: Splits) -> pd.DataFrame:
    """2,000 training rows, stratified by source and label: enough for a sensible model."""
    return splits.train.groupby(["source", "label"]).sample(500, random_state=0)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, sample: pd.DataFrame, splits: Splits) -> Path:
    """A real artifact of a model fitted on the sample (loads in well under a second)."""
    pipeline = fit(sample)
    small = Splits(sample, splits.validation.head(200), splits.test.head(200))
    return export_model(
        pipeline,
        name="sentiment-small",
        hyperparameters={"note": "test fixture"},
        data=data_summary(small),
        metrics={},
        models_root=tmp_path_factory.mktemp("models"),
        make_latest=False,
    )


@pytest.fixture(scope="session")
def second_model_dir(tmp_path_factory, splits: Splits) -> Path:
    """Another real artifact (another sample, so another version): a candidate for a reload,
    a shadow or a canary (lessons/12_rollout)."""
    other = splits.train.groupby(["source", "label"]).sample(500, random_state=1)
    small = Splits(other, splits.validation.head(200), splits.test.head(200))
    return export_model(
        fit(other),
        name="sentiment-small",
        hyperparameters={"note": "test fixture, second model"},
        data=data_summary(small),
        metrics={},
        models_root=tmp_path_factory.mktemp("models2"),
        make_latest=False,
    )


# --- Stages in-process ------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
STAGE_FILES = {  # every stage's module is named `inference_server`, so each is loaded by path
    name: ROOT / stage.app_dir / "inference_server.py" for name, stage in STAGES.items()
}
# The stages with /ready (batched and later): start_stage waits for it before the first request.
READY_STAGES = tuple(STAGES)[tuple(STAGES).index("batched") :]


def _import_stage(stage: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"stage_{stage}", STAGE_FILES[stage])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def stage_modules(tmp_path_factory, small_model_dir: Path) -> dict[str, ModuleType]:
    """Each stage's module, imported once. Its module-level ``app`` (built from the environment
    at import) is never started: tests build their own with ``create_app``. The naive stage
    loads its model at import, so it gets the small model and is imported per test instead."""
    scratch = tmp_path_factory.mktemp("import")
    with pytest.MonkeyPatch.context() as mp:  # the import-time app logs here, not to logs/
        mp.setenv("INFERENCE_LOG_PATH", str(scratch / "import.log"))
        mp.setenv("INFERENCE_MODEL_DIR", str(small_model_dir))
        return {stage: _import_stage(stage) for stage in STAGE_FILES if stage != "naive"}


class StageStarter:
    """``start_stage(stage, **settings)``: see the ``start_stage`` fixture."""

    def __init__(self, modules, monkeypatch, model_dir: Path, log_path: Path) -> None:
        self.modules = modules
        self.monkeypatch = monkeypatch
        self.defaults = {"model_dir": model_dir, "log_path": log_path}

    def app(self, stage: str = FINAL_STAGE, *, load_model=None, **settings):
        """A new, unstarted app of ``stage`` with these settings (names as in Settings, in any
        case: ``max_queue=3`` or ``MAX_QUEUE=3``) and ``load_model`` (default: the real one).
        A bad setting raises SystemExit naming its INFERENCE_* variable, as at start-up."""
        if stage == "naive":  # no create_app: the baseline reads the environment at import
            return self.module(stage).app
        overrides = self.defaults | {name.lower(): value for name, value in settings.items()}
        loader = {} if load_model is None else {"load_model": load_model}
        return self.modules[stage].create_app(load_settings(**overrides), **loader)

    def module(self, stage: str) -> ModuleType:
        """The stage's module (for the naive stage: freshly imported with the small model)."""
        if stage == "naive":
            self.monkeypatch.setenv("INFERENCE_MODEL_DIR", str(self.defaults["model_dir"]))
            return _import_stage("naive")
        return self.modules[stage]

    @contextmanager
    def __call__(
        self,
        stage: str = FINAL_STAGE,
        *,
        load_model=None,
        ready: bool = True,
        raise_server_exceptions: bool = True,
        **settings,
    ) -> Iterator[TestClient]:
        """Start ``stage`` (lifespan included) and yield a TestClient; ``client.app`` is the
        app. With ``ready`` it first waits until /ready says 200 (the stages from lifecycle on
        load their model in the background)."""
        app = self.app(stage, load_model=load_model, **settings)
        with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
            if ready and stage in READY_STAGES:
                self.wait_ready(client)
            yield client

    def wait_ready(self, client: TestClient) -> None:
        """Wait until a stage's background model load is done (/ready says 200)."""
        self.wait_until(lambda: client.get("/ready").status_code == 200, "server not ready")

    @staticmethod
    def wait_until(condition: Callable[[], bool], message: str, timeout: float = 30.0) -> None:
        """Poll ``condition``: the one wait for a background step such as model loading."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, message
            time.sleep(0.02)


@pytest.fixture
def start_stage(stage_modules, monkeypatch, tmp_path: Path, small_model_dir: Path) -> StageStarter:
    """Start any stage in-process with its own settings and model loader.

    ``with start_stage("metrics", max_body_bytes=2048) as client: ...`` runs the app's lifespan
    (model loaded; from the batched stage on, /ready == 200) and stops it at the end of the block;
    ``start_stage.app("fast", load_model=gate.load)`` builds an app without starting it.
    Defaults: the small model, and the JSON log in ``tmp_path / "requests.log"``.
    """
    return StageStarter(stage_modules, monkeypatch, small_model_dir, tmp_path / "requests.log")
