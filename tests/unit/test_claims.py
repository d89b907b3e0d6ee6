"""Every figure listed in ``benchmarks/claims.yaml`` agrees with its doc and its result file.

One test per claim (its id: the doc, the start of the text, the figure), a test that the file
parses with the required keys, and a self-test of the matcher on a temporary repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtest.claims import (
    CLAIMS_FILE,
    REQUIRED_KEYS,
    check_claim,
    claim_id,
    doc_text,
    entry_problems,
    figure_in_text,
    load_claims,
    main,
    numbers_in,
)

CLAIMS = load_claims(CLAIMS_FILE)


def test_claims_file_parses_and_every_entry_has_the_required_keys() -> None:
    assert CLAIMS, f"{CLAIMS_FILE} lists no claims"
    problems = {
        f"entry {i} ({claim_id(e) if isinstance(e, dict) else e!r})": entry_problems(e)
        for i, e in enumerate(CLAIMS)
    }
    problems = {name: found for name, found in problems.items() if found}
    assert not problems, f"malformed entries in {CLAIMS_FILE}: {problems}"


@pytest.mark.parametrize("entry", CLAIMS, ids=[claim_id(e) for e in CLAIMS])
def test_claim_matches_its_source(entry: dict[str, Any]) -> None:
    problems = check_claim(entry)
    assert not problems, "\n".join(problems)


# --- the matcher itself -----------------------------------------------------------------------


def test_numbers_in_reads_separators_decimals_and_exponents() -> None:
    text = "4,663 vs 1,930 req/s, **2.42x**, 47 %, 7.8e-16, step 3768, v1.2.3"
    numbers = numbers_in(text)
    for expected in (4663, 1930, 2.42, 47, 7.8e-16, 3768):
        assert expected in numbers
    assert figure_in_text(3768, "3,768 req/s")
    assert figure_in_text(2.42, "2.42x the naive stage")
    assert not figure_in_text(2.4, "2.42x")  # a figure is a whole number, not a prefix
    assert not figure_in_text(42, "2.42x")
    assert not figure_in_text(376, "3,768")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A tiny repository: one doc, one notebook, one CSV and one JSON result."""
    (tmp_path / "doc.md").write_text(
        "The final stage serves **2.50x** the naive (5,000 req/s) in 2,500 ms.\n"
    )
    notebook = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["Queue bound: 128 texts\n"]},
            {
                "cell_type": "code",
                "metadata": {},
                "source": "MAX_QUEUE = 64  # 999 req/s",
                "outputs": [],
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (tmp_path / "nb.ipynb").write_text(json.dumps(notebook))
    (tmp_path / "summary.csv").write_text(
        "stage,users,rps\nnaive,64,2000\nbatched,64,5000.4\nbatched,4,3000\n"
    )
    (tmp_path / "result.json").write_text(json.dumps({"queue": {"bound": 128}, "runs": [1, 2.5]}))
    return tmp_path


def _claim(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "doc": "doc.md",
        "text": "**2.50x** the naive",
        "value": 2.50,
        "source": "summary.csv",
        "where": {"stage": "batched", "users": 64},
        "field": "rps",
        "divide_by": {"where": {"stage": "naive", "users": 64}, "field": "rps"},
        "tolerance": 0.01,
    }
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def test_a_true_claim_passes(repo: Path) -> None:
    assert check_claim(_claim(), repo) == []
    assert (
        check_claim(_claim(text="(5,000 req/s)", value=5000, divide_by=None, tolerance=0.5), repo)
        == []
    )
    json_claim = _claim(
        doc="nb.ipynb", text="bound: 128", value=128, source="result.json",
        field="queue.bound", where=None, divide_by=None, tolerance=0,
    )  # fmt: skip
    assert check_claim(json_claim, repo) == []
    scaled = _claim(
        text="in 2,500 ms", value=2500, source="result.json", field="runs.1",
        where=None, divide_by=None, scale=1000, tolerance=0,
    )  # fmt: skip
    assert check_claim(scaled, repo) == []


def test_a_wrong_figure_fails_naming_doc_text_and_value(repo: Path) -> None:
    (repo / "doc.md").write_text("The final stage serves **2.42x** the naive.\n")
    problems = check_claim(_claim(text="**2.42x** the naive", value=2.42), repo)
    assert len(problems) == 1
    assert "doc.md" in problems[0] and "**2.42x** the naive" in problems[0]
    assert "2.5002" in problems[0]  # the computed value


def test_text_must_print_the_value(repo: Path) -> None:
    problems = check_claim(_claim(value=2.5001, tolerance=0.01), repo)
    assert any("does not print 2.5001" in p for p in problems)


def test_missing_text_doc_row_and_key_fail(repo: Path) -> None:
    assert "do not contain" in check_claim(_claim(text="**3.00x**"), repo)[0]
    assert "does not exist" in check_claim(_claim(doc="nope.md"), repo)[0]
    assert "0 rows match" in check_claim(_claim(where={"stage": "x"}), repo)[0]
    assert "2 rows match" in check_claim(_claim(where={"stage": "batched"}), repo)[0]
    assert (
        "no 'queue.size'"
        in check_claim(
            _claim(source="result.json", field="queue.size", where=None, divide_by=None), repo
        )[0]
    )
    # code cells of a notebook are not searched
    assert (
        "do not contain"
        in check_claim(_claim(doc="nb.ipynb", text="MAX_QUEUE = 64", value=64), repo)[0]
    )
    assert doc_text(repo / "nb.ipynb") == "Queue bound: 128 texts\n"


def test_entry_problems_names_missing_and_unknown_keys() -> None:
    entry = {key: "x" for key in REQUIRED_KEYS} | {"colour": "red"}
    del entry["field"]
    problems = entry_problems(entry)
    assert "missing key 'field'" in problems
    assert "unknown key 'colour'" in problems
    assert "'value' must be a number, got 'x'" in problems


def test_command_line_reports_each_claim(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(CLAIMS_FILE)]) == 0
    assert f"0 of {len(CLAIMS)} claims fail" in capsys.readouterr().out
    wrong = tmp_path / "claims.yaml"
    wrong.write_text(
        '- {doc: README.md, text: "no such sentence 1.5", value: 1.5,\n'
        "   source: benchmarks/results/onnx/onnx_attempt.json, field: test_texts, tolerance: 0}\n"
    )
    assert main([str(wrong)]) == 1
    out = capsys.readouterr().out
    assert "FAIL README.md: no such sentence 1.5" in out and "1 of 1 claims fail" in out
