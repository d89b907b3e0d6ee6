"""tasks.py's argument handling and set-up stamp (no processes: tests/e2e runs the commands)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

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
