"""Lesson 00, exercise 3: break a copy of an artifact three ways and read what load_model says.

    .venv/bin/python lessons/00_model/solutions/break_loader.py     # copies models/LATEST to /tmp

The real artifact is never touched: every change is made to a copy in a scratch directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

from sentiment_model import load_model


def delete_metadata(artifact: Path) -> None:
    (artifact / "metadata.json").unlink()


def flip_one_byte(artifact: Path) -> None:
    data = bytearray((artifact / "model.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact / "model.skops").write_bytes(bytes(data))


def edit_sklearn_version(artifact: Path) -> None:
    meta_path = artifact / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["sklearn_version"] = "1.0.0"
    meta_path.write_text(json.dumps(meta))


BREAKAGES = {
    "metadata.json deleted": delete_metadata,
    "one byte of model.skops changed": flip_one_byte,
    "sklearn_version edited": edit_sklearn_version,
}


def try_each(artifact: Path, scratch: Path) -> dict[str, str]:
    """For each breakage, on a fresh copy: the error or warning class and its message."""
    outcomes = {}
    for n, (name, breakage) in enumerate(BREAKAGES.items()):
        copy = Path(shutil.copytree(artifact, scratch / f"{n}-{artifact.name}"))
        breakage(copy)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                load_model(copy)
            except Exception as e:  # the point is to see which one
                outcomes[name] = f"{type(e).__name__}: {e}"
                continue
        outcomes[name] = "; ".join(f"{w.category.__name__}: {w.message}" for w in caught)
    return outcomes


def main() -> None:
    from sentiment_model.artifact import default_model_dir

    with tempfile.TemporaryDirectory(prefix="break-loader-") as scratch:
        for name, outcome in try_each(default_model_dir(), Path(scratch)).items():
            print(f"{name}:\n    {outcome}")


if __name__ == "__main__":
    main()
