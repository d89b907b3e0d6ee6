"""lessons/life_of_a_request.md stays true to the code: every file it names exists, every
``file:function`` (or class, or ``Class.method``) it names is defined in that file, its walk has
one step per arrow of the diagram, and the middlewares in the diagram are the final stage's, in
the order its ASGI stack runs them (outermost first)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from functools import cache
from pathlib import Path

import pytest

from serving.settings import load_settings
from serving.stages import FINAL_STAGE, STAGES

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "lessons" / "life_of_a_request.md"
MAX_WORDS = 1_600  # "about 1,500": a map, not a lesson

FILE = r"(?:[\w-]+/)*[\w-]+\.py"
FILE_REF = re.compile(rf"(?<![\w/.-])({FILE}|(?:[\w-]+/)*[\w-]+\.(?:md|ipynb))(?![\w/])")
SYMBOL_REF = re.compile(rf"(?<![\w/.-])({FILE}):([A-Za-z_][\w.]*\w)")
# pkg.module:Name, as uvicorn's --http takes it (serving.protocol:LimitedHttpToolsProtocol)
MODULE_REF = re.compile(r"(?<![\w/.])((?:[a-z_]+\.)+[a-z_]+)(?<!\.py):([A-Za-z_]\w*)")
PARTICIPANT = re.compile(rf"^\s*participant\s+\w+\s+as\s+({FILE})<br/>(\w+)\s*$", re.M)
ARROW = re.compile(r"^\s*\w+\s*(?:-->>|->>|--\)|-\)|--x|-x|-->|->)[+-]?\s*\w+\s*:", re.M)
WALK_STEP = re.compile(r"^(\d+)\. ", re.M)


def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def diagram() -> str:
    blocks = re.findall(r"```mermaid\n(.*?)```", page(), re.S)
    assert len(blocks) == 1, "the page has one mermaid diagram"
    return blocks[0]


@cache
def tree_of(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(encoding="utf-8"))


def _children(node: ast.AST, name: str) -> list[ast.AST]:
    """Definitions named ``name`` directly inside ``node``'s body (not inside another def)."""
    found, todo = [], list(ast.iter_child_nodes(node))
    while todo:
        child = todo.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if child.name == name:
                found.append(child)
            continue
        if isinstance(child, ast.Assign | ast.AnnAssign):
            targets = child.targets if isinstance(child, ast.Assign) else [child.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(child)
        todo.extend(ast.iter_child_nodes(child))
    return found


def defines(path: str, dotted: str) -> bool:
    """Whether ``dotted`` (``f``, ``Class.method``, ``outer.inner``) is defined in ``path``."""
    nodes: list[ast.AST] = [tree_of(path)]
    for part in dotted.split("."):
        nodes = [child for node in nodes for child in _children(node, part)]
    return bool(nodes)


def defines_anywhere(path: str, name: str) -> bool:
    return any(
        getattr(node, "name", None) == name
        for node in ast.walk(tree_of(path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    )


def test_every_file_the_page_names_exists() -> None:
    names = set(FILE_REF.findall(page()))
    assert "inference_server.py" in names and "serving/protocol.py" in names
    missing = sorted(n for n in names if not (ROOT / n).is_file())
    assert not missing, f"the page names files that do not exist: {missing}"


def test_every_file_function_the_page_names_is_defined_there() -> None:
    refs = set(SYMBOL_REF.findall(page()))
    assert len(refs) >= 20, refs  # the walk gives file:function for each step
    wrong = sorted(f"{path}:{name}" for path, name in refs if not defines(path, name))
    assert not wrong, f"not defined where the page says: {wrong}"
    for module, name in set(MODULE_REF.findall(page())):
        path = module.replace(".", "/") + ".py"
        assert (ROOT / path).is_file() and defines(path, name), f"{module}:{name}"


def test_the_diagram_names_every_file_the_walk_names() -> None:
    # The picture alone must show the whole path: every file of a step, in a participant, a
    # message or a note.
    walk = page().split("## The walk", 1)[1].split("\n## ", 1)[0]
    missing = sorted(set(FILE_REF.findall(walk)) - set(FILE_REF.findall(diagram())))
    assert not missing, f"the walk names files the diagram does not: {missing}"


def test_each_participant_of_the_diagram_is_defined_in_its_file() -> None:
    participants = PARTICIPANT.findall(diagram())
    assert len(participants) >= 10, participants
    for path, name in participants:
        assert (ROOT / path).is_file(), path
        assert defines_anywhere(path, name), f"{path} defines no {name}"


def test_the_walk_has_one_step_per_arrow_of_the_diagram() -> None:
    # The diagram numbers its arrows (autonumber); the walk's steps use the same numbers.
    assert "autonumber" in diagram()
    arrows = len(ARROW.findall(diagram()))
    steps = [int(n) for n in WALK_STEP.findall(page())]
    assert steps == list(range(1, arrows + 1)), (arrows, steps)


def test_the_page_stays_short() -> None:
    assert len(page().split()) <= MAX_WORDS


@pytest.fixture
def final_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The final stage's app, built (not started) with its log under tmp_path."""
    stage = STAGES[FINAL_STAGE]
    file = ROOT / stage.app_dir / (stage.app.split(":")[0].replace(".", "/") + ".py")
    monkeypatch.setenv("INFERENCE_LOG_PATH", str(tmp_path / "import.log"))  # its module's app
    spec = importlib.util.spec_from_file_location("life_of_a_request_final_stage", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_app(load_settings(log_path=tmp_path / "requests.log"))


def test_the_diagram_names_the_final_stage_middlewares_in_the_order_they_run(final_app) -> None:
    # add_middleware puts each new one outermost: user_middleware[0] runs first.
    stack = [
        (m.cls.__module__.replace(".", "/") + ".py", m.cls.__name__)
        for m in final_app.user_middleware
    ]
    drawn = [(path, name) for path, name in PARTICIPANT.findall(diagram()) if "Middleware" in name]
    assert drawn == stack


def test_the_diagram_names_the_route_class_of_predict(final_app) -> None:
    [route] = [
        r
        for r in final_app.routes
        if getattr(r, "path", None) == "/predict" and "POST" in getattr(r, "methods", ())
    ]
    cls = type(route)
    drawn = (cls.__module__.replace(".", "/") + ".py", cls.__name__)
    assert drawn in PARTICIPANT.findall(diagram())


def test_the_step_7_notebook_shows_the_same_diagram() -> None:
    """Notebook 07 (the page is read with step 7) carries a copy of the diagram (JupyterLab 4
    draws mermaid fences) and links the page: the copy is the page's, character for character."""
    [notebook] = STAGES["fast"].notebooks
    cells = json.loads((ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    copies = [m for m in markdown if "```mermaid" in m]
    assert len(copies) == 1, f"{notebook} has one mermaid diagram"
    assert re.findall(r"```mermaid\n(.*?)```", copies[0], re.S) == [diagram()]
    assert "../lessons/life_of_a_request.md" in copies[0]
