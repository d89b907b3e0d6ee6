"""tasks.py's argument handling and set-up stamp (no processes: tests/e2e runs the commands)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from monitoring import prom

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("tasks_for_test", ROOT / "tasks.py")
tasks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tasks)


@pytest.mark.parametrize(
    "args",
    [
        ["naive"],
        ["--stage", "naive"],
        ["--stage=naive"],
        ["naive", "--stage", "naive"],
        ["--port", "8000", "naive"],
    ],
)
def test_every_way_of_naming_a_stage(args):
    stage, opts, extra = tasks.parse_serve_args(args)
    assert (stage, opts.host, opts.port, extra) == ("naive", "127.0.0.1", 8000, [])


def test_default_stage_and_options_passed_on_to_the_launcher():
    args = ["--port", "8001", "--log-level", "debug", "--workers", "2"]
    stage, opts, extra = tasks.parse_serve_args(args)
    assert (stage, opts.port, extra) == (
        "batched",
        8001,
        ["--log-level", "debug", "--workers", "2"],
    )
    argv = [str(a) for a in tasks.server_argv(stage, opts.host, opts.port, extra)]
    assert argv[1:] == [
        *("-m", "serving.serve", "--app-dir", ".", "inference_server:app"),
        *("--host", "127.0.0.1", "--port", "8001", "--log-level", "debug", "--workers", "2"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fast"], "unknown stage 'fast'; choose one of naive, validated, metrics, batched"),
        (["--stage", "fast"], "invalid choice: 'fast'"),
        (["naive", "--stage", "metrics"], "two stages given"),
    ],
)
def test_bad_stage_says_what_to_choose(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        tasks.parse_serve_args(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_command_lists_the_commands(capsys):
    assert tasks.main(["deploy"]) == 2
    assert "choose one of setup, serve, test" in capsys.readouterr().err
    assert tasks.main(["--help"]) == 0


def test_a_comment_in_requirements_does_not_reinstall(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "requirements.txt").write_text("# pins\nnumpy==2.2.6  # arrays\n")
    monkeypatch.setattr(tasks, "ROOT", tmp_path)
    before = tasks.requirements_digest()
    (tmp_path / "requirements.txt").write_text("# pinned, see README\n\nnumpy==2.2.6\n")
    assert tasks.requirements_digest() == before
    (tmp_path / "requirements.txt").write_text("numpy==2.2.5\n")
    assert tasks.requirements_digest() != before


def test_minutes():
    assert [tasks.minutes(s) for s in (4.6, 75.2, 600)] == ["5 s", "1 min 15 s", "10 min 0 s"]


@pytest.fixture
def ready_venv(tmp_path, monkeypatch):
    """A scratch root whose .venv is up to date; the commands tasks.py would run are recorded."""
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "requirements.txt").write_text("numpy==2.2.6\n")
    monkeypatch.setattr(tasks, "ROOT", tmp_path)
    monkeypatch.setattr(tasks, "PY", tmp_path / "python")
    monkeypatch.setattr(tasks, "STAMP", tmp_path / "stamp")
    tasks.PY.write_text("")
    tasks.STAMP.write_text(tasks.requirements_digest())
    ran: list[list[str]] = []
    monkeypatch.setattr(tasks, "run", lambda *cmd, **kw: ran.append([str(c) for c in cmd]))
    monkeypatch.setattr(
        tasks, "run_child", lambda cmd, **kw: ran.append([str(c) for c in cmd]) or 0
    )
    return ran


def test_setup_trains_the_default_model_only_when_it_is_missing(ready_venv, tmp_path, capsys):
    models = tmp_path / "models"
    tasks.setup()
    assert ready_venv == [
        [str(tasks.PY), "-m", "sentiment_model.train", "--if-missing", "--models-root", str(models)]
    ]
    assert "setup: training the default model, once" in capsys.readouterr().out
    ready_venv.clear()
    models.mkdir()
    (models / "LATEST").write_text("sentiment-abc\n")
    tasks.setup()  # checked here, without a Python process that imports scikit-learn
    assert ready_venv == []
    assert capsys.readouterr().out == "default model present: sentiment-abc\n"


def test_model_command_trains_once_on_a_fresh_clone(ready_venv):
    assert tasks.main(["model", "--search"]) == 0
    assert ready_venv == [[str(tasks.PY), "-m", "sentiment_model.train", "--search"]]


def test_monitor_runs_prometheus_as_a_child_with_the_given_flags(ready_venv, monkeypatch):
    monkeypatch.setattr(prom, "find_binary", lambda name="prometheus": "/usr/bin/prometheus")
    monkeypatch.setattr(prom, "DATA_DIR", tasks.ROOT / "data")
    listen = "--web.listen-address=127.0.0.1:9191"
    assert tasks.main(["monitor", listen]) == 0
    assert ready_venv == [prom.command("/usr/bin/prometheus", overrides=[listen])]
    assert ready_venv[0][-1] == listen
    assert prom.DATA_DIR.is_dir()


def test_missing_prometheus_is_reported_with_install_instructions(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(prom, "COMMON_LOCATIONS", ("/nonexistent/prometheus",))
    assert prom.find_binary("prometheus") is None
    assert tasks.monitor([]) == 1
    message = capsys.readouterr().err
    for hint in ("apt-get install", "brew install prometheus", "prometheus.io/download"):
        assert hint in message
