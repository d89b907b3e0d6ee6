"""tasks.py's argument handling and set-up stamp (no processes: tests/e2e runs the commands)."""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from monitoring import prom
from serving.stages import FINAL_STAGE

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("tasks_for_test", ROOT / "tasks.py")
tasks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tasks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def listening() -> Iterator[int]:
    """A socket of this process listening on a free port of 127.0.0.1; yields the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


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
        FINAL_STAGE,
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
        (
            ["fastest"],
            "unknown stage 'fastest'; choose one of naive, validated, metrics, batched, "
            "lifecycle, hardened, fast",
        ),
        (["--stage", "fastest"], "invalid choice: 'fastest'"),
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
    listen = f"--web.listen-address=127.0.0.1:{free_port()}"
    assert tasks.main(["monitor", listen]) == 0
    config = prom.DATA_DIR / "prometheus.yml"
    assert ready_venv == [prom.command("/usr/bin/prometheus", config=config, overrides=[listen])]
    assert ready_venv[0][-1] == listen
    assert 'targets: ["127.0.0.1:8000"]' in config.read_text()


@pytest.mark.parametrize(
    ("args", "target"),
    [(["--port", "8001"], "127.0.0.1:8001"), (["--target", "10.0.0.7:8123"], "10.0.0.7:8123")],
)
def test_monitor_scrapes_the_server_it_is_told_to(ready_venv, monkeypatch, capsys, args, target):
    """It used to scrape 127.0.0.1:8000 whatever --port said, and say so."""
    monkeypatch.setattr(prom, "find_binary", lambda name="prometheus": "/usr/bin/prometheus")
    monkeypatch.setattr(prom, "DATA_DIR", tasks.ROOT / "data")
    listen = f"--web.listen-address=127.0.0.1:{free_port()}"
    assert tasks.main(["monitor", *args, listen]) == 0
    assert f'targets: ["{target}"]' in (prom.DATA_DIR / "prometheus.yml").read_text()
    assert not any(a in ready_venv[0] for a in args)  # ours, not Prometheus' flags
    assert f"Prometheus scrapes {target} every second" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--target", "8001"], ["--target", "host:http"], ["--port", "0"]])
def test_monitor_refuses_a_target_that_is_not_host_and_port(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        tasks.monitor(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "is not HOST:PORT" in err or "'0' is not a TCP port" in err


def test_monitor_names_what_holds_its_port(ready_venv, monkeypatch, capsys):
    """Debian's package runs a Prometheus of its own on 9090."""
    monkeypatch.setattr(prom, "find_binary", lambda name="prometheus": "/usr/bin/prometheus")
    monkeypatch.setattr(prom, "DATA_DIR", tasks.ROOT / "data")
    with listening() as port:
        assert tasks.main(["monitor", f"--web.listen-address=127.0.0.1:{port}"]) == 3
    out = capsys.readouterr().out
    assert f"cannot monitor: port {port} is already in use on 127.0.0.1: held by pid" in out
    assert "systemctl disable --now prometheus" in out
    assert ready_venv == []  # Prometheus not started


def test_missing_prometheus_is_reported_with_install_instructions(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(prom, "COMMON_LOCATIONS", ("/nonexistent/prometheus",))
    assert prom.find_binary("prometheus") is None
    assert tasks.monitor([]) == 1
    message = capsys.readouterr().err
    for hint in ("apt-get install", "brew install prometheus", "prometheus.io/download"):
        assert hint in message


def test_a_free_port_is_no_problem():
    assert tasks.port_problem("127.0.0.1", free_port()) is None


def test_a_taken_port_is_named_with_its_holder():
    with listening() as port:
        problem = tasks.port_problem("127.0.0.1", port, ". Stop it")
        holders = tasks.port_holders(port)
    assert problem.startswith(f"port {port} is already in use on 127.0.0.1: held by pid ")
    assert problem.endswith(". Stop it")
    if os.path.exists("/proc/net/tcp"):  # Linux: the holder is named, we are it
        assert holders == [
            (
                os.getpid(),
                tasks.Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode().strip(),
            )
        ]
        assert f"held by pid {os.getpid()} (" in problem


def test_a_port_that_cannot_be_bound_says_why():
    assert "cannot listen on 192.0.2.1:" in tasks.port_problem("192.0.2.1", free_port())


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs /proc")
def test_only_our_own_process_group_counts_as_our_server():
    """`ready:` was printed when any process answered on the port (a second serve's)."""
    with listening() as port:
        assert tasks.listens(os.getpgid(0), "127.0.0.1", port)
        assert not tasks.listens(os.getpgid(0) + 100_000, "127.0.0.1", port)  # not that group
    assert not tasks.listens(os.getpgid(0), "127.0.0.1", port)  # closed


def test_describe_holders_degrades_without_proc_or_lsof(monkeypatch):
    monkeypatch.setattr(tasks, "port_holders", lambda port: None)
    assert "no /proc or lsof here; try `ss -ltnp` or `lsof -i :8000`" in tasks.describe_holders(
        8000
    )
    monkeypatch.setattr(tasks, "port_holders", lambda port: [])
    assert "another user's process" in tasks.describe_holders(8000)


@pytest.mark.parametrize("port", ["0", "65536", "http", "-1"])
def test_serve_refuses_a_port_out_of_range(port, capsys):
    with pytest.raises(SystemExit) as exit_:
        tasks.parse_serve_args(["--port", port])
    assert exit_.value.code == 2
    assert "not a TCP port (1-65535)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "whole", "stops_early"),
    [
        ([], True, False),
        (["-q", "-ra"], True, False),
        (["-x"], True, True),
        (["--maxfail=3"], True, True),
        (["--durations", "20"], True, False),
        (["-p", "no:cacheprovider"], True, False),
        (["--help"], False, False),
        (["-h"], False, False),
        (["--collect-only", "-q"], False, False),
        (["--co"], False, False),
        (["--version"], False, False),
        (["--fixtures"], False, False),
        (["-k", "serve"], False, False),
        (["-kserve"], False, False),
        (["-m", "not slow"], False, False),
        (["-m=not slow"], False, False),
        (["--lf"], False, False),
        (["--deselect", "tests/unit"], False, False),
        (["tests/unit"], False, False),
        (["tests/unit/test_tasks.py::test_minutes", "-x"], False, True),
    ],
)
def test_only_a_whole_run_counts_as_one(args, whole, stops_early):
    """`tasks.py test --help` (or any flag without a path) was recorded as the last full run."""
    assert tasks.pytest_selection(args) == (whole, stops_early)


@pytest.mark.parametrize(
    ("args", "code", "recorded"),
    [
        ([], 0, True),
        ([], 1, True),  # some tests failed: the whole suite still ran
        ([], 2, False),  # interrupted
        (["--help"], 0, False),
        (["--collect-only"], 0, False),
        (["-m", "not slow"], 0, False),
        (["-x"], 1, False),  # stopped at the first failure
        (["-x"], 0, True),
    ],
)
def test_the_last_full_run_is_recorded_only_for_a_whole_run(
    ready_venv, monkeypatch, args, code, recorded
):
    monkeypatch.setattr(tasks, "TEST_TIME", tasks.ROOT / "last-full-test-seconds")
    monkeypatch.setattr(tasks, "run_child", lambda cmd, **kw: code)
    (tasks.ROOT / "models").mkdir()
    (tasks.ROOT / "models" / "LATEST").write_text("sentiment-abc\n")
    assert tasks.test(args) == code
    assert tasks.TEST_TIME.exists() == recorded


def test_a_whole_run_says_the_drills_have_a_lane_of_their_own(ready_venv, monkeypatch, capsys):
    monkeypatch.setattr(tasks, "TEST_TIME", tasks.ROOT / "last-full-test-seconds")
    (tasks.ROOT / "models").mkdir()
    (tasks.ROOT / "models" / "LATEST").write_text("sentiment-abc\n")
    tasks.test([])
    out = capsys.readouterr().out
    assert "the three drill notebooks run in a lane of their own" in out
    assert "-m pytest -n 2 --dist loadgroup" in out  # the whole suite: two lanes
    tasks.test(["tests/unit"])
    assert "-n 2" not in capsys.readouterr().out  # a selection: one process, as before
    tasks.test(["-p", "no:xdist"])
    assert "-n 2" not in capsys.readouterr().out  # the caller's own choice
