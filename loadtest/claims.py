"""Claims: figures quoted in prose, checked against the committed result files they come from.

``benchmarks/claims.yaml`` is a YAML list; each entry ties one figure in a document to one value
in a result file::

    - doc: README.md                    # a markdown file, or a .ipynb (its markdown cells)
      text: "**2.42x** the naive stage" # an exact substring of the doc that holds the figure
      value: 2.42                       # the figure as printed in text ("3,768" -> 3768)
      source: benchmarks/results/20261127-030529/summary.csv   # .csv or .json
      where: {stage: batched, profile: short, kind: ladder, users: 64}  # CSV: the one row
      field: rps                        # CSV column, or a dotted key path in JSON
      divide_by: {where: {stage: naive, profile: short, kind: ladder, users: 4}, field: rps}
      scale: 1                          # optional multiplier (e.g. 1000: seconds -> ms)
      tolerance: 0.01                   # absolute, in the units of value

:func:`check_claim` returns the list of what is wrong with one entry (empty when the doc, the
text, the figure and the source agree); ``tests/unit/test_claims.py`` runs it on every entry;
``python -m loadtest.claims`` prints every entry's computed value and verdict (a quick check
while writing prose).

Rules, in the order they are checked:

- the doc exists and contains ``text`` (at least once; every copy is the same text, so one
  check covers them all);
- ``text`` holds ``value`` as printed: some number written in it, thousands separators removed,
  equals ``value`` (numbers are read unsigned, so ``value: -3.5`` matches "-3.5" and "3.5");
- the source value, ``field`` of the one CSV row whose columns equal ``where`` (compared as
  strings, stripped) or the dotted ``field`` path in a JSON file, divided by the ``divide_by``
  value when given (same rules; its own ``source`` optional, the entry's by default), times
  ``scale``, is within ``tolerance`` of ``value``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CLAIMS_FILE = REPO / "benchmarks" / "claims.yaml"

REQUIRED_KEYS = ("doc", "text", "value", "source", "field", "tolerance")
OPTIONAL_KEYS = ("where", "divide_by", "scale")
DIVIDE_BY_KEYS = ("field", "where", "source")

# A number as prose prints it: "4,663", "2.42", "0.5", "7.8e-16" (digits first, so "x" or "%"
# after it and "(" or "**" before it do not matter).
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:[eE]([-+]?\d+))?")


class ClaimError(Exception):
    """A claim whose source cannot be read as the entry says (missing file, row or key)."""


def load_claims(path: Path = CLAIMS_FILE) -> list[dict[str, Any]]:
    """The entries of a claims file (a YAML list of mappings); an empty file is an empty list."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data is None:
        return []
    if not isinstance(data, list):
        raise ClaimError(f"{path}: expected a YAML list of claims, got {type(data).__name__}")
    return data


def entry_problems(entry: Any) -> list[str]:
    """What is malformed in one entry: missing or unknown keys, wrong types (empty when fine)."""
    if not isinstance(entry, dict):
        return [f"an entry must be a mapping, got {type(entry).__name__}: {entry!r}"]
    problems = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in entry]
    unknown = set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS)
    problems += [f"unknown key {key!r}" for key in sorted(unknown)]
    for key in ("doc", "text", "source", "field"):
        if key in entry and not (isinstance(entry[key], str) and entry[key]):
            problems.append(f"{key!r} must be a non-empty string")
    for key in ("value", "tolerance", "scale"):
        if key in entry and not _is_number(entry[key]):
            problems.append(f"{key!r} must be a number, got {entry[key]!r}")
    if _is_number(entry.get("tolerance")) and entry["tolerance"] < 0:
        problems.append("'tolerance' must be >= 0")
    if "where" in entry and not isinstance(entry["where"], dict):
        problems.append("'where' must be a mapping of column -> value")
    if "source" in entry and isinstance(entry["source"], str):
        if Path(entry["source"]).suffix not in (".csv", ".json"):
            problems.append(f"'source' must be a .csv or .json file: {entry['source']}")
        elif entry["source"].endswith(".csv") and "where" not in entry:
            problems.append("a CSV source needs 'where' (the one row)")
    divide_by = entry.get("divide_by")
    if divide_by is not None:
        if not isinstance(divide_by, dict) or "field" not in divide_by:
            problems.append("'divide_by' must be a mapping with at least 'field'")
        else:
            unknown = set(divide_by) - set(DIVIDE_BY_KEYS)
            problems += [f"unknown key 'divide_by.{key}'" for key in sorted(unknown)]
    return problems


def claim_id(entry: dict[str, Any]) -> str:
    """A short readable name for one entry: the doc, the start of its text and the figure."""
    text = " ".join(str(entry.get("text", "")).split())
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{entry.get('doc', '?')}: {text} [{entry.get('value', '?')}]"


def doc_text(path: Path) -> str:
    """The searchable text of a doc: the file itself, or a notebook's markdown cells joined."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix != ".ipynb":
        return raw
    cells = json.loads(raw).get("cells", [])
    sources = []
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else source)
    return "\n\n".join(sources)


def numbers_in(text: str) -> list[float]:
    """Every number written in ``text``, thousands separators removed ("3,768" -> 3768.0)."""
    found = []
    for match in _NUMBER.finditer(text):
        whole, fraction, exponent = match.groups()
        literal = whole.replace(",", "") + (fraction or "")
        if exponent:
            literal += "e" + exponent
        found.append(float(literal))
    return found


def figure_in_text(value: float, text: str) -> bool:
    """Whether ``text`` prints ``value``: some number in it equals it (unsigned, as printed)."""
    target = abs(float(value))
    return any(math.isclose(n, target, rel_tol=1e-12, abs_tol=0.0) for n in numbers_in(text))


def source_value(root: Path, source: str, field: str, where: dict[str, Any] | None) -> float:
    """``field`` of the one CSV row matching ``where``, or the dotted ``field`` path in JSON."""
    path = root / source
    if not path.is_file():
        raise ClaimError(f"source {source} does not exist")
    if path.suffix == ".csv":
        return _csv_value(path, source, field, where or {})
    if path.suffix == ".json":
        return _json_value(path, source, field)
    raise ClaimError(f"source {source}: only .csv and .json are read")


def claimed_source_value(root: Path, entry: dict[str, Any]) -> float:
    """The value an entry's source gives, after its optional ``divide_by`` and ``scale``."""
    value = source_value(root, entry["source"], entry["field"], entry.get("where"))
    divide_by = entry.get("divide_by")
    if divide_by:
        denominator = source_value(
            root,
            divide_by.get("source", entry["source"]),
            divide_by["field"],
            divide_by.get("where"),
        )
        if denominator == 0:
            raise ClaimError(f"divide_by gives 0 ({divide_by})")
        value = value / denominator
    return value * float(entry.get("scale", 1))


def check_claim(entry: dict[str, Any], root: Path = REPO) -> list[str]:
    """What is wrong with one claim (empty when the doc, its text and the source agree)."""
    problems = entry_problems(entry)
    if problems:
        return problems
    doc, text, value = entry["doc"], entry["text"], entry["value"]
    doc_path = root / doc
    if not doc_path.is_file():
        return [f"{doc}: the doc does not exist"]
    if text not in doc_text(doc_path):
        where = "markdown cells" if doc_path.suffix == ".ipynb" else "text"
        return [f"{doc}: its {where} do not contain {text!r}"]
    if not figure_in_text(value, text):
        printed = ", ".join(f"{n:g}" for n in numbers_in(text)) or "none"
        problems.append(f"{doc}: {text!r} does not print {value} (numbers in it: {printed})")
    try:
        computed = claimed_source_value(root, entry)
    except ClaimError as err:
        return [*problems, f"{doc}: {text!r}: {err}"]
    tolerance = float(entry["tolerance"])
    if not abs(computed - float(value)) <= tolerance:
        problems.append(
            f"{doc}: {text!r} says {value}, but {entry['source']} gives {computed:.6g} "
            f"(off by {abs(computed - float(value)):.4g}, tolerance {tolerance:g})"
        )
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_cell(value: Any) -> str:
    """A ``where`` value as a CSV cell would print it (YAML reads 64 as int, true as bool)."""
    if value is None:
        return ""
    return str(value).strip()


def _csv_value(path: Path, source: str, field: str, where: dict[str, Any]) -> float:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and field not in rows[0]:
        raise ClaimError(f"{source} has no column {field!r}")
    unknown = [key for key in where if rows and key not in rows[0]]
    if unknown:
        raise ClaimError(f"{source} has no column(s) {unknown} (in 'where')")
    wanted = {key: _as_cell(value) for key, value in where.items()}
    matching = [
        row
        for row in rows
        if all((row.get(key) or "").strip() == cell for key, cell in wanted.items())
    ]
    if len(matching) != 1:
        raise ClaimError(f"{source}: {len(matching)} rows match {wanted}, expected exactly 1")
    cell = (matching[0][field] or "").strip()
    try:
        return float(cell)
    except ValueError:
        raise ClaimError(f"{source}: {field} = {cell!r} is not a number") from None


def _json_value(path: Path, source: str, field: str) -> float:
    node: Any = json.loads(path.read_text(encoding="utf-8"))
    for part in field.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif (
            isinstance(node, list)
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        else:
            raise ClaimError(f"{source} has no {field!r} (stopped at {part!r})")
    if not _is_number(node):
        raise ClaimError(f"{source}: {field} = {node!r} is not a number")
    return float(node)


def main(argv: list[str] | None = None) -> int:
    """Check every claim of a claims file; print one line each; exit 1 if any fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("claims", nargs="?", type=Path, default=CLAIMS_FILE)
    args = parser.parse_args(argv)
    failed = 0
    for entry in load_claims(args.claims):
        problems = check_claim(entry)
        try:
            computed = f"{claimed_source_value(REPO, entry):.6g}"
        except (ClaimError, KeyError, TypeError, ValueError):
            computed = "?"
        verdict = "FAIL" if problems else "ok"
        print(f"{verdict:4s} {claim_id(entry)} (source gives {computed})")
        for problem in problems:
            print(f"     {problem}")
        failed += bool(problems)
    print(f"{failed} of {len(load_claims(args.claims))} claims fail")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
