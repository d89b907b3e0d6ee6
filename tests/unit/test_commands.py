"""Every command the READMEs and lessons print works as printed from a fresh clone.

Commands are collected from every markdown file: each line of a fenced ``bash`` / ``sh`` /
``shell`` / ``console`` block (``$ `` lines only in ``console`` and unlabelled blocks), and
inline code that starts like a command (``make model``, ``.venv/bin/uvicorn ...``). Each one
must parse as a shell line, and whatever it names that the project provides must exist: a
``tasks.py`` command, a make target, a stage, a program in ``.venv/bin``, a module for
``python -m``, the files and directories it mentions. The cheap ones (``--help``, ``make -n``,
``diff``) are run. Programs the project does not provide (curl, docker, ...) are the reader's
own and are not checked.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "node_modules", ".ipynb_checkpoints", ".pytest_cache"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# Programs that live in .venv/bin: printed bare, they need an activated .venv.
VENV_TOOLS = {
    "python",
    "uvicorn",
    "pytest",
    "jupyter",
    "locust",
    "ruff",
    "pip",
    "pyinstrument",
    "py-spy",
}
# Folders the programs write at run time: a path there need not exist before the command runs.
RUNTIME_DIRS = {"logs", "models"}
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1", "(", ")"}


@dataclass(frozen=True)
class Command:
    """One command line found in a markdown file."""

    file: str
    line: int
    text: str
    fenced: bool  # from a code block (must run as printed), not prose

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


def markdown_files() -> list[Path]:
    """Every markdown file of the project."""
    return sorted(
        p for p in ROOT.rglob("*.md") if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts[:-1])
    )


def _starts_like_a_command(text: str) -> bool:
    words = text.split()
    if len(words) < 2:
        return False
    first = next((w for w in words if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w)), "")
    return (
        first in {"make", "python3", "python", "uvicorn", "pytest", "jupyter", "locust", "ruff"}
        or bool(re.fullmatch(r"python3\.\d+", first))
        or first.startswith(".venv/")
    )


def collect(path: Path) -> list[Command]:
    """The commands in one markdown file."""
    name = str(path.relative_to(ROOT))
    found: list[Command] = []
    fence = None  # (marker, language) while inside a code block
    pending, start = "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = (match.group(2), match.group(3).lower())
            continue
        if fence is not None:
            if line.strip().startswith(fence[0]):
                fence = None
                continue
            language = fence[1]
            text = line.strip()
            if language in ("console", "") or text.startswith("$ "):
                if not text.startswith("$ ") and not pending:
                    continue  # output, not a command
                text = text.removeprefix("$ ")
            elif language not in SHELL_LANGUAGES:
                continue
            if not text or (text.startswith("#") and not pending):
                continue
            if not pending:
                start = number
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            found.append(Command(name, start, pending + text, fenced=True))
            pending = ""
            continue
        for span in INLINE.findall(line):
            if _starts_like_a_command(span):
                found.append(Command(name, number, span, fenced=False))
    return found


ALL = [c for p in markdown_files() for c in collect(p)]


def split_commands(text: str) -> list[list[str]]:
    """Shell words of each simple command in ``text`` (split at pipes, ``;``, ``&&`` ...)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, current = [], []
    for word in lexer:
        if word in SHELL_OPERATORS or set(word) <= set("|&;<>()"):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(word)
    if current:
        commands.append(current)
    return commands


def venv_bin() -> Path:
    """Where the project's programs are: .venv/bin (the interpreter's own when run elsewhere)."""
    bin_dir = ROOT / ".venv" / "bin"
    return bin_dir if bin_dir.is_dir() else Path(sys.executable).parent


def load_tasks():
    """tasks.py as a module (it is standard library only)."""
    spec = importlib.util.spec_from_file_location("tasks_under_test", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TASKS = load_tasks()
MAKE_TARGETS = set(
    re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
)


def problems(words: list[str], fenced: bool) -> list[str]:
    """What is wrong with one simple command (empty: nothing)."""
    env = {}
    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if not words:
        return []
    program, args = words[0], words[1:]
    found = []
    for word in args:  # files and folders of the repository it names must exist
        if word.startswith("-") or "<" in word or "://" in word or "*" in word:
            continue
        path_part = word.split("=", 1)[-1]
        top = path_part.split("/")[0]
        repo_path = (
            "/" in path_part
            and not path_part.startswith("/")  # the reader's own /tmp/..., not the repository's
            and (ROOT / top).exists()
            and top not in RUNTIME_DIRS
        )
        if repo_path and not (ROOT / path_part).exists():
            found.append(f"{path_part} does not exist")
    if program in ("python3", "python") or re.fullmatch(r"python3\.\d+", program):
        if args[:1] == ["tasks.py"]:
            return found + tasks_problems(args[1:])
        if program == "python3" and args[:1] == ["-m"]:
            return [*found, "`python3 -m` runs the system Python: use .venv/bin/python -m"]
    if program == "make":
        return found + make_problems(args)
    name = program.removeprefix(".venv/bin/")
    if program.startswith(".venv/bin/") or name in VENV_TOOLS:
        if name == program and fenced:
            found.append(f"bare `{name}` needs an activated .venv: print .venv/bin/{name}")
        if not (venv_bin() / name).exists():
            return [*found, f"no {name} in {venv_bin()}"]
        module = args[1] if name == "python" and args[:1] == ["-m"] and len(args) > 1 else None
        placeholder = module is None or not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", module)
        if not placeholder and importlib.util.find_spec(module) is None:
            found.append(f"no module {module}")
        if name == "uvicorn" or (name == "python" and args[1:2] == ["uvicorn"]):
            found += uvicorn_problems(args)
    return found


def tasks_problems(args: list[str]) -> list[str]:
    """A tasks.py command must exist; a stage given to serve must be one."""
    if not args or args[0] in ("help", "-h", "--help"):
        return []
    if args[0] not in TASKS.COMMANDS:
        return [f"tasks.py has no command {args[0]!r}"]
    if args[0] == "serve":
        rest = args[1:]
        stages = [a.split("=", 1)[1] for a in rest if a.startswith("--stage=")]
        stages += [b for a, b in itertools.pairwise(rest) if a == "--stage"]
        stages += rest[:1] if rest and not rest[0].startswith("-") else []
        return [f"no stage {s!r}" for s in stages if s not in TASKS.STAGES]
    return []


def make_problems(args: list[str]) -> list[str]:
    """Every target must be in the Makefile; STAGE=... must be a stage."""
    found = []
    for word in args:
        if word.startswith("-"):
            continue
        if "=" in word:
            key, value = word.split("=", 1)
            if key == "STAGE" and value not in TASKS.STAGES:
                found.append(f"no stage {value!r}")
        elif word not in MAKE_TARGETS:
            found.append(f"no make target {word!r}")
    return found


def uvicorn_problems(args: list[str]) -> list[str]:
    """The app a uvicorn command names must be a module in its --app-dir."""
    app_dir = "."
    if "--app-dir" in args:
        app_dir = args[args.index("--app-dir") + 1]
    # The positional app only: an option's value (--http serving.protocol:Class) is not the app.
    apps = [
        a
        for before, a in zip(["", *args], args, strict=False)
        if re.fullmatch(r"[\w.]+:\w+", a) and not before.startswith("-")
    ]
    found = []
    for app in apps:
        module = app.split(":")[0].replace(".", "/")
        if not (ROOT / app_dir / f"{module}.py").is_file():
            found.append(f"no {module}.py in {app_dir}")
    return found


def test_the_markdown_has_commands():
    files = {c.file for c in ALL}
    assert "README.md" in files and "benchmarks/README.md" in files
    assert any(c.file.startswith("lessons/") for c in ALL)
    assert len(ALL) >= 20


@pytest.mark.parametrize("command", ALL, ids=str)
def test_command_parses_and_names_what_exists(command: Command):
    try:
        commands = split_commands(command.text)
    except ValueError as e:  # unbalanced quotes
        pytest.fail(f"{command}: does not parse ({e})")
    assert commands, f"{command}: empty"
    found = [p for words in commands for p in problems(list(words), command.fenced)]
    assert not found, f"{command}: " + "; ".join(found)


def cheap(command: Command) -> bool:
    """Commands that are quick and change nothing: help, make's dry run, diff."""
    words = command.text.split()
    return words[-1] in ("--help", "-h") or (words[:1] == ["diff"] and len(words) == 3)


CHEAP = [c for c in ALL if cheap(c)] + [
    Command("(tasks.py)", 0, "python3 tasks.py --help", fenced=True)
]
MAKES = sorted({" ".join(w) for c in ALL for w in split_commands(c.text) if w[:1] == ["make"]})


@pytest.mark.parametrize("command", CHEAP, ids=str)
def test_cheap_command_runs(command: Command):
    words = shlex.split(command.text)
    if words[0] == "python3":
        words[0] = sys.executable  # any Python >= 3.10 runs tasks.py
    elif words[0].startswith(".venv/bin/") or words[0] in VENV_TOOLS:
        words[0] = str(venv_bin() / words[0].removeprefix(".venv/bin/"))
    done = subprocess.run(words, cwd=ROOT, capture_output=True, text=True, timeout=60)
    ok = (0, 1) if words[0] == "diff" else (0,)
    assert done.returncode in ok, f"{command}: exit {done.returncode}\n{done.stderr[-2000:]}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("command", MAKES)
def test_make_command_is_a_valid_dry_run(command: str):
    done = subprocess.run(
        [*shlex.split(command), "-n"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "tasks.py" in done.stdout


def test_checker_catches_what_does_not_work():
    bad = {
        "uvicorn --app-dir lessons/01_naive inference_server:app": "needs an activated .venv",
        "make serve STAGE=fastest": "no stage 'fastest'",
        "make deploy": "no make target 'deploy'",
        "python3 tasks.py serve --stage=fastest": "no stage 'fastest'",
        "python3 tasks.py deploy": "no command 'deploy'",
        ".venv/bin/python -m loadtest.nothing": "no module loadtest.nothing",
        ".venv/bin/uvicorn --app-dir lessons/09_none inference_server:app": "does not exist",
        "python3 -m loadtest.bench": "system Python",
        "diff lessons/02_validated/server.py inference_server.py": "does not exist",
    }
    for text, why in bad.items():
        found = [p for words in split_commands(text) for p in problems(words, fenced=True)]
        assert any(why in p for p in found), (text, found)
    good = "curl -s localhost:8000/ready; echo; .venv/bin/python -m pytest tests -x | head"
    assert [p for w in split_commands(good) for p in problems(w, fenced=True)] == []
