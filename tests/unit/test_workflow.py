"""The GitHub Actions workflow, .ci/run and the pre-commit hooks, checked where no runner is:
GitHub's workflow schema, actionlint (with shellcheck and pyflakes on the steps' scripts), the
commands the workflow runs against the ones .ci/run runs (they cannot drift apart), and the
hooks' tools against requirements.txt.

The tools come from requirements.txt. Where one is missing its test is skipped, except in CI
(CI=true), where it fails: a CI run that checked nothing must not pass.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from missing_tool import missing_tool

from serving.logs import JsonLineFormatter

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
CI_WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
CI_RUN = ROOT / ".ci" / "run"
PRE_COMMIT = ROOT / ".pre-commit-config.yaml"
# pytest options that only report (the whole suite with them is still the whole suite).
REPORTING = re.compile(r"--junitxml=\S+|--overwrite")


def need(name: str) -> str:
    """A tool installed next to this Python (or on PATH); skipped where missing, failed in CI."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        missing_tool(f"{name} is missing: pip install -r requirements.txt")
    return found


def run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, **kw)


def load(path: Path) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on".
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


WORKFLOW = load(CI_WORKFLOW)
JOBS = WORKFLOW["jobs"]


def steps(job: str) -> list[dict]:
    return JOBS[job]["steps"]


def scripts(job: str) -> list[str]:
    return [s["run"] for s in steps(job) if "run" in s]


# --- the workflow is valid ----------------------------------------------------------------


def test_there_is_a_workflow():
    assert CI_WORKFLOW in WORKFLOWS


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_githubs_schema(workflow: Path):
    tool = need("check-jsonschema")
    result = run(tool, "--builtin-schema", "vendor.github-workflows", str(workflow))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_passes(workflow: Path):
    shellcheck, pyflakes = need("shellcheck"), need("pyflakes")
    result = run(
        need("actionlint"), "-shellcheck", shellcheck, "-pyflakes", pyflakes, str(workflow)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_and_the_schema_catch_a_broken_workflow(tmp_path):
    """The two checks above can fail: a misspelt key, an unquoted variable in a script."""
    text = CI_WORKFLOW.read_text(encoding="utf-8")
    broken = tmp_path / "broken.yml"
    broken.write_text(
        text.replace("permissions:", "permisions:", 1).replace('test "$code"', "test $code")
    )
    shellcheck, pyflakes = need("shellcheck"), need("pyflakes")
    lint = run(need("actionlint"), "-shellcheck", shellcheck, "-pyflakes", pyflakes, str(broken))
    assert lint.returncode != 0
    assert "permisions" in lint.stdout and "SC2086" in lint.stdout, lint.stdout
    schema = run(
        need("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)
    )
    assert schema.returncode != 0 and "permisions" in schema.stdout, schema.stdout


def test_ci_run_passes_shellcheck():
    result = run(need("shellcheck"), str(CI_RUN))
    assert result.returncode == 0, result.stdout + result.stderr


# --- what the workflow promises -----------------------------------------------------------


def test_runs_on_push_and_pull_request_and_cancels_older_runs():
    assert {"push", "pull_request"} <= set(WORKFLOW["on"])
    assert WORKFLOW["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in WORKFLOW["concurrency"]["group"]


def test_permissions_are_read_only():
    assert WORKFLOW["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in JOBS.values())  # no job asks for more


def test_every_action_is_pinned_to_a_commit_with_its_version():
    text = CI_WORKFLOW.read_text(encoding="utf-8")
    uses = re.findall(r"uses: (\S+)(.*)", text)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action
        assert re.fullmatch(r" # v\d+\.\d+\.\d+", comment), f"{action}: no version comment"


def test_checkout_keeps_no_token():
    for name in JOBS:
        for step in steps(name):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


def test_fast_loop_on_the_oldest_and_newest_python_with_a_pip_cache():
    assert JOBS["fast"]["strategy"]["matrix"]["python"] == ["3.10", "3.13"]
    for name in ("lint", "fast", "suite"):
        [setup] = [s for s in steps(name) if s.get("uses", "").startswith("actions/setup-python@")]
        assert setup["with"]["cache"] == "pip", name
        assert setup["with"]["cache-dependency-path"] == "requirements.txt", name


def test_the_suite_uploads_its_report_and_the_failing_notebooks():
    [upload] = [s for s in steps("suite") if "upload-artifact" in s.get("uses", "")]
    assert upload["with"]["path"] == "reports/"
    assert upload["if"] == "${{ !cancelled() }}"  # after a failure too
    [test] = [s for s in scripts("suite") if ".ci/run test" in s]
    assert "--junitxml=reports/junit.xml" in test and "--overwrite" in test
    [keep] = [s for s in steps("suite") if "failed-notebooks" in s.get("run", "")]
    assert keep["if"] == "failure()" and keep["shell"] == "python"
    assert 'Path("reports/failed-notebooks")' in keep["run"]


def test_image_job_builds_starts_asks_and_stops_the_container():
    script = "\n".join(scripts("image"))
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    [port] = re.findall(r"^EXPOSE (\d+)$", dockerfile, re.MULTILINE)
    assert "docker build" in script
    assert f"--publish 127.0.0.1:{port}:{port}" in script
    assert f"http://127.0.0.1:{port}/ready" in script and "--retry-all-errors" in script
    assert f"http://127.0.0.1:{port}/predict" in script
    assert "docker kill --signal SIGTERM server" in script
    assert 'test "$code" = 0' in script  # the launcher's exit status after a complete drain


def test_image_job_looks_for_the_shutdown_line_as_the_server_writes_it():
    """The job reads the key the JSON formatter really writes (``event``), not a guess."""
    record = logging.makeLogRecord({"msg": "shutdown", "levelname": "INFO", "levelno": 20})
    line = json.loads(JsonLineFormatter().format(record))
    [key] = [k for k, v in line.items() if v == "shutdown"]
    script = "\n".join(scripts("image"))
    assert f'x.get("{key}") == "shutdown"' in script
    assert 'x["drain_complete"] is True' in script


# --- the workflow and .ci/run run the same commands ------------------------------------------


def ci_run_steps() -> set[str]:
    """The steps .ci/run offers (its ``case``), besides ``all``."""
    text = CI_RUN.read_text(encoding="utf-8")
    words = re.findall(r"^  ([\w |]+)\)", text, re.MULTILINE)
    return {w.strip() for alt in words for w in alt.split("|")} - {"all"}


def recorded_commands(tmp_path: Path, shell_line: str) -> list[list[str]]:
    """The commands ``shell_line`` makes .ci/run run: python3 is a stub that records its
    arguments; apt-get and sudo record too (nothing is installed); promtool and taskset are
    there, so the machine's tools count as present."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "calls.jsonl"
    log.write_text("")
    recorder = (
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "if sys.argv[1:] == ['--version']:\n"
        "    sys.exit(print('Python 3 (stub)'))\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv) + '\\n')\n"
    )
    for name in ("python3", "apt-get", "sudo", "promtool", "taskset"):
        stub = stubs / name
        stub.write_text(recorder)
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", shell_line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return [[Path(c[0]).name, *c[1:]] for c in calls]


def test_every_test_step_of_the_workflow_goes_through_ci_run():
    offered = ci_run_steps()
    assert offered == {"tools", "lint", "test"}
    called = set()
    for name in ("lint", "fast", "suite"):
        for script in scripts(name):
            # A job step names nothing .ci/run does not do (no tasks.py or pytest of its own).
            assert "tasks.py" not in script and "pytest" not in script, script
            for line in script.splitlines():
                if ".ci/run" in line:
                    words = shlex.split(line)
                    assert words[:2] == ["bash", ".ci/run"], line
                    assert words[2] in offered, line
                    called.add(words[2])
    assert called == offered


def test_the_workflow_runs_what_ci_run_runs(tmp_path):
    """Run with stubs, the workflow's .ci/run lines and ``bash .ci/run`` itself call the same
    tasks.py commands: lint, the README's ``python3 tasks.py test`` (the suite job adds only
    reporting options), and the fast loop is that command with ``-m "not slow"``."""
    everything = recorded_commands(tmp_path, "bash .ci/run")
    assert ["python3", "tasks.py", "lint"] in everything
    assert ["python3", "tasks.py", "test"] in everything
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python3 tasks.py test " in readme  # the README's test command is the one run

    by_job = {}
    for name in ("lint", "fast", "suite"):
        lines = [ln for s in scripts(name) for ln in s.splitlines() if ".ci/run" in ln]
        by_job[name] = [c for ln in lines for c in recorded_commands(tmp_path, ln)]
    python = [c for cmds in by_job.values() for c in cmds if c[0] == "python3"]
    whole = [REPORTING.sub("", " ".join(c)).split() for c in by_job["suite"] if "test" in c]
    assert whole == [["python3", "tasks.py", "test"]]
    assert ["python3", "tasks.py", "lint"] in python
    assert by_job["fast"] == [["python3", "tasks.py", "test", "-m", "not slow"]]
    # Whatever .ci/run runs beyond tasks.py (the machine's tools), the suite job runs too.
    tools = [c for c in everything if c[0] != "python3"]
    assert [c for c in by_job["suite"] if c[0] != "python3"] == tools
    assert {" ".join(c) for c in everything if c[0] == "python3"} <= {
        REPORTING.sub("", " ".join(c)).strip() for c in python
    }


def test_the_suite_job_installs_the_tools_before_it_tests():
    lines = [ln for s in scripts("suite") for ln in s.splitlines() if ".ci/run" in ln]
    assert [shlex.split(ln)[2] for ln in lines] == ["tools", "test"]


# --- the pre-commit hooks ---------------------------------------------------------------------


PRE_COMMIT_CONFIG = yaml.safe_load(PRE_COMMIT.read_text(encoding="utf-8"))
HOOKS = {h["id"]: h for repo in PRE_COMMIT_CONFIG["repos"] for h in repo["hooks"]}


def requirement_lines() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return {re.sub(r"\s+", " ", ln.split("#", 1)[0]).strip() for ln in lines} - {""}


def test_hooks_are_local_and_pinned_as_requirements_txt_pins():
    """No hook comes from a git host; each installs exactly the pins of requirements.txt."""
    assert {repo["repo"] for repo in PRE_COMMIT_CONFIG["repos"]} == {"local"}
    pins = requirement_lines()
    for hook in HOOKS.values():
        assert hook["language"] == "python", hook["id"]
        for dependency in hook["additional_dependencies"]:
            assert re.sub(r"\s+", " ", dependency) in pins, (hook["id"], dependency)
    assert {"ruff-check", "ruff-format", "nbstripout"} <= set(HOOKS)


def test_committed_notebooks_pass_the_notebook_hook():
    """The notebooks are stored as the hook leaves them (outputs and counts kept)."""
    words = shlex.split(HOOKS["nbstripout"]["entry"])
    assert words[0] == "nbstripout" and {"--keep-output", "--keep-count"} <= set(words)
    notebooks = sorted(str(p) for p in (ROOT / "notebooks").glob("*.ipynb"))
    result = run(need("nbstripout"), *words[1:], "--verify", *notebooks)
    assert result.returncode == 0, "run .venv/bin/pre-commit run --all-files:\n" + result.stdout
