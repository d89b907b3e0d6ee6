"""Export a trained pipeline as a versioned, verifiable artifact, and load it back safely.

An artifact is a directory ``models/<name>-<version>/`` holding

* ``model.skops``: the pipeline in skops' format. Loading it never runs code from the file
  (unlike pickle / joblib): only types on skops' list of safe types (numpy, scikit-learn
  estimators, builtins) may be rebuilt, and a file that names any other type is refused.
* ``metadata.json``: what the model is, how it was trained, how well it did, and the sha256 of
  ``model.skops`` so a changed or truncated file is caught before it is used.

``models/LATEST`` names the default artifact, which the servers load without configuration.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import shutil
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np
import sklearn
import skops
import skops.io as sio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from skops.io.exceptions import UntrustedTypesFoundException

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
LATEST_FILE = "LATEST"
MODELS_ROOT = Path(__file__).resolve().parent.parent / "models"
# Every member of model.skops gets this timestamp (the earliest a zip can store) and these
# permissions, so the archive's bytes depend on the model alone, not on when it was written.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_MODE = 0o644 << 16
VERSION_HEX_DIGITS = 12


class ModelLoadError(Exception):
    """An artifact could not be loaded; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ArtifactNotFoundError(ModelLoadError):
    """The artifact directory or one of its files does not exist."""


class MetadataError(ModelLoadError):
    """metadata.json is not valid JSON or lacks a required field."""


class ChecksumMismatchError(ModelLoadError):
    """model.skops does not have the sha256 that metadata.json records."""


class CorruptArtifactError(ModelLoadError):
    """model.skops is not a readable skops archive, or holds something other than a model."""


class UntrustedTypeError(ModelLoadError):
    """model.skops asks to rebuild a type outside the allow-list."""


class ModelVersionWarning(UserWarning):
    """The artifact was trained with another scikit-learn version than the one running."""


class ArtifactMetadata(BaseModel):
    """The contents of metadata.json."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    version: str
    created_at: str
    labels: list[str] = Field(min_length=2)
    hyperparameters: dict
    data: dict
    metrics: dict
    python_version: str
    sklearn_version: str
    skops_version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int


class Prediction(NamedTuple):
    """One text's result: the label and the probability the model gives that label."""

    label: str
    score: float


class SentimentModel:
    """A loaded artifact: a pure ``predict`` plus the metadata that describes it."""

    def __init__(self, pipeline, metadata: ArtifactMetadata, path: Path):
        self.pipeline = pipeline
        self.metadata = metadata
        self.path = path
        self.labels = tuple(metadata.labels)
        self.scorer = "sklearn"  # which computes the probabilities: see use_scorer()
        self._proba = pipeline.predict_proba
        self._direct = None  # the DirectScorer in use, if any

    def use_scorer(self, kind: str, log: logging.Logger | None = None) -> str:
        """Compute probabilities with ``kind``: ``"sklearn"`` (the pipeline) or ``"direct"``.

        ``"direct"`` builds a :class:`~sentiment_model.scorer.DirectScorer` from the pipeline's
        fitted arrays and checks it against scikit-learn on probe texts. If the pipeline has a
        parameter it does not reproduce, or the check fails, a warning goes to ``log`` and the
        model keeps scikit-learn. Returns the scorer in use.
        """
        from sentiment_model import scorer as direct  # only the final stage needs it

        if kind not in ("direct", "sklearn"):
            raise ValueError(f"unknown scorer {kind!r}; choose 'direct' or 'sklearn'")
        self.scorer, self._proba, self._direct = "sklearn", self.pipeline.predict_proba, None
        if kind == "direct":
            try:
                candidate = direct.build_direct_scorer(self.pipeline)
                problem = direct.verify(candidate, self.pipeline)
            except direct.UnsupportedPipelineError as e:
                problem = f"unsupported pipeline: {e}"
            except Exception as e:  # whatever breaks the check, scikit-learn still serves
                problem = f"check failed: {type(e).__name__}: {e}"
            if problem is None:
                self.scorer, self._proba = "direct", candidate.predict_proba
                self._direct = candidate
            else:
                (log or logging.getLogger(__name__)).warning(
                    "direct_scorer_refused",
                    extra={"problem": problem, "scorer": "sklearn", "model_version": self.version},
                )
        return self.scorer

    @property
    def version(self) -> str:
        """The artifact's version: the start of its model file's sha256, e.g. ``1a2b3c4d5e6f``."""
        return self.metadata.version

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, one row per text, columns in ``labels`` order."""
        return self._proba(texts)

    def predict(self, texts: list[str]) -> list[Prediction]:
        """Label and score for each text, in input order. Has no side effects."""
        if not texts:
            return []
        proba = self._proba(texts)
        best = proba.argmax(axis=1)
        scores = proba[np.arange(len(best)), best]
        return [
            Prediction(self.labels[i], float(s))
            for i, s in zip(best.tolist(), scores.tolist(), strict=True)
        ]

    def predict_with_signals(self, texts: list[str]) -> tuple[list[Prediction], list]:
        """:meth:`predict` plus each text's :class:`~sentiment_model.signals.Signals` (tokens,
        unknown_ratio, confidence). Nearly free with the direct scorer, which has the terms and
        the vocabulary look-ups anyway; with scikit-learn the texts are analysed a second time.
        """
        from sentiment_model import signals as model_signals

        if not texts:
            return [], []
        if self._direct is not None:
            proba, sig = self._direct.predict_with_signals(texts)
        else:
            proba = self._proba(texts)
            sig = model_signals.compute(self.pipeline.steps[0][1], texts, proba[:, 1])
        best = proba.argmax(axis=1)
        scores = proba[np.arange(len(best)), best]
        predictions = [
            Prediction(self.labels[i], float(s))
            for i, s in zip(best.tolist(), scores.tolist(), strict=True)
        ]
        return predictions, sig


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compact_for_export(pipeline) -> dict:
    """Shrink a fitted pipeline for serving, in place, without changing a single prediction.

    * ``TfidfVectorizer.stop_words_`` (every term cut by min_df / max_df, kept only for
      introspection) is deleted. scikit-learn >= 1.6 no longer stores it; older versions do,
      and it can be larger than the vocabulary itself.
    * The fitted ``vocabulary_`` dict becomes the ``vocabulary`` parameter, as a numpy array of
      terms in column order. skops writes a dict as one JSON node per entry (hundreds of MB of
      schema and seconds to load for 374k terms) but an array as one compact ``.npy`` member;
      scikit-learn rebuilds the same term -> column dict from it on first use.
    * ``_stop_words_id``, the ``id()`` of the stop-word list (a memory address that only caches
      a consistency check, redone on first use), is dropped so that the file does not change
      from one process to the next.

    Returns what was done, for the metadata.
    """
    report = {"stop_words_removed": 0, "vocabulary_terms": 0}
    for _, step in pipeline.steps:
        if hasattr(step, "_stop_words_id"):
            del step._stop_words_id
        if hasattr(step, "stop_words_"):
            report["stop_words_removed"] += len(step.stop_words_)
            del step.stop_words_
        if isinstance(getattr(step, "vocabulary_", None), dict) and step.vocabulary is None:
            terms = sorted(step.vocabulary_, key=step.vocabulary_.__getitem__)
            step.set_params(vocabulary=np.array(terms))
            del step.vocabulary_
            report["vocabulary_terms"] += len(terms)
    return report


def _renumber(node, ids: dict[int, int], files: dict[str, str], members: set[str]) -> None:
    """Replace skops' memory addresses in a schema with numbers in order of appearance."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int) and not isinstance(value, bool):
                node[key] = ids.setdefault(value, len(ids) + 1)
            elif key == "file" and isinstance(value, str) and value in members:
                suffix = Path(value).suffix
                node[key] = files.setdefault(value, f"{len(files) + 1}{suffix}")
            else:
                _renumber(value, ids, files, members)
    elif isinstance(node, list):
        for item in node:
            _renumber(item, ids, files, members)


def reproducible_skops(obj, compresslevel: int = 6) -> bytes:
    """``skops.io.dumps(obj)``, rewritten so that the same object always gives the same bytes.

    skops names the objects in ``schema.json`` and the array members of the zip archive after
    ``id()``, a memory address, and stamps every member with the current time: two dumps of one
    model never match. Here the addresses become 1, 2, 3, ... in the order the schema mentions
    them (shared objects stay shared), members are written in that order with a fixed date and
    mode, and the schema is written the way skops writes it. ``skops.io.load`` reads the result
    like any other skops file.
    """
    with zipfile.ZipFile(io.BytesIO(sio.dumps(obj))) as src:
        members = set(src.namelist())
        schema = json.loads(src.read("schema.json"))
        ids: dict[int, int] = {}
        files: dict[str, str] = {}
        _renumber(schema, ids, files, members)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as dst:
            entries = [(new, src.read(old)) for old, new in files.items()]
            entries.append(("schema.json", json.dumps(schema, indent=2).encode()))
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
                info.external_attr = ZIP_MODE
                info.create_system = 3  # "Unix", whatever the platform
                info.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(info, data, compresslevel=compresslevel)
    return out.getvalue()


def model_version(digest: str) -> str:
    """The version of a model file with sha256 ``digest``: its first 12 hex digits.

    The version names the content alone, so the same data, code, parameters and library versions
    give the same version on any day (``created_at`` in metadata.json says when it was made).
    """
    return digest[:VERSION_HEX_DIGITS]


def export_model(
    pipeline,
    *,
    name: str,
    hyperparameters: dict,
    data: dict,
    metrics: dict,
    labels: tuple[str, ...] = ("negative", "positive"),
    models_root: Path = MODELS_ROOT,
    make_latest: bool = True,
    calibration: dict | None = None,
    reference: dict | None = None,
) -> Path:
    """Write ``models_root/<name>-<version>/`` and return its path.

    ``model.skops`` is reproducible (:func:`reproducible_skops`) and the version is the start of
    its sha256 (:func:`model_version`): exporting the same model twice gives the same bytes, the
    same version and the same directory, which is then left as it is. With ``make_latest`` the
    artifact becomes the default that the servers load; tests and notebooks pass their own
    ``models_root`` (a temporary directory) so that the student's ``models/`` is never touched.
    ``calibration`` (how the scores were calibrated, and what it changed) and ``reference`` (the
    signals' distributions on held-out texts, :func:`sentiment_model.signals.reference`) go into
    the metadata as they are, when given.
    """
    compaction = compact_for_export(pipeline)
    models_root = Path(models_root)
    models_root.mkdir(parents=True, exist_ok=True)
    blob = reproducible_skops(pipeline)
    digest = hashlib.sha256(blob).hexdigest()
    version = model_version(digest)
    final = models_root / f"{name}-{version}"
    if _is_intact(final, digest):  # the same model exported before: keep it (and its date)
        if make_latest:
            (models_root / LATEST_FILE).write_text(final.name + "\n")
        return final
    staging = models_root / f".staging-{name}-{version}"
    if staging.exists():  # left over from an interrupted export
        shutil.rmtree(staging)
    staging.mkdir()
    model_path = staging / MODEL_FILE
    model_path.write_bytes(blob)
    created = datetime.now(timezone.utc)
    metadata = ArtifactMetadata(
        name=name,
        version=version,
        created_at=created.isoformat(timespec="seconds"),
        labels=list(labels),
        hyperparameters=hyperparameters,
        data=data,
        metrics=metrics,
        python_version=platform.python_version(),
        sklearn_version=sklearn.__version__,
        skops_version=skops.__version__,
        sha256=digest,
        size_bytes=model_path.stat().st_size,
        compaction=compaction,
        **({} if calibration is None else {"calibration": calibration}),
        **({} if reference is None else {"reference": reference}),
    )
    (staging / METADATA_FILE).write_text(metadata.model_dump_json(indent=2) + "\n")
    if final.exists():  # a damaged copy of this version: replace it
        shutil.rmtree(final)
    staging.rename(final)  # appears whole or not at all
    if make_latest:
        (models_root / LATEST_FILE).write_text(final.name + "\n")
    return final


def _is_intact(path: Path, digest: str) -> bool:
    """Whether ``path`` is a complete artifact whose model file has sha256 ``digest``."""
    try:
        return read_metadata(path).sha256 == digest and sha256_file(path / MODEL_FILE) == digest
    except (ModelLoadError, OSError):
        return False


def default_model_dir(models_root: Path = MODELS_ROOT) -> Path:
    """The artifact named in ``models/LATEST`` (written by the last default export)."""
    pointer = Path(models_root) / LATEST_FILE
    if not pointer.is_file():
        raise ArtifactNotFoundError(
            pointer, "no default model yet: run `make model` (python -m sentiment_model.train)"
        )
    return Path(models_root) / pointer.read_text().strip()


def read_metadata(path: Path) -> ArtifactMetadata:
    """Parse and validate ``metadata.json`` in an artifact directory."""
    meta_path = Path(path) / METADATA_FILE
    if not meta_path.is_file():
        raise ArtifactNotFoundError(meta_path, "metadata file is missing")
    try:
        return ArtifactMetadata.model_validate_json(meta_path.read_bytes())
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'document'}: {err['msg']}" for err in e.errors()
        )
        raise MetadataError(meta_path, f"invalid metadata ({problems})") from None


def load_model(path: Path | str | None = None) -> SentimentModel:
    """Load and verify an artifact directory (default: ``models/LATEST``).

    Checks, in order: the directory and both files exist, the metadata is valid, the sha256
    matches, the archive holds only trusted types, and it unpacks to a classifier with the
    metadata's labels. Each failure raises its own :class:`ModelLoadError` subclass. The model
    answers one warm-up prediction before it is returned, so the first request is not slow.
    """
    path = default_model_dir() if path is None else Path(path)
    if not path.is_dir():
        raise ArtifactNotFoundError(path, "model directory does not exist")
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        raise ArtifactNotFoundError(model_path, "model file is missing")
    metadata = read_metadata(path)

    digest = sha256_file(model_path)
    if digest != metadata.sha256:
        raise ChecksumMismatchError(
            model_path, f"sha256 is {digest[:12]}..., metadata says {metadata.sha256[:12]}..."
        )
    try:
        # trusted=None: only skops' default safe types; anything else raises before it is built.
        pipeline = sio.load(model_path, trusted=None)
    except UntrustedTypesFoundException as e:
        raise UntrustedTypeError(model_path, f"refusing untrusted types: {e}") from None
    except Exception as e:  # zipfile.BadZipFile, KeyError, json errors, ...
        raise CorruptArtifactError(
            model_path, f"cannot read the archive ({type(e).__name__}: {e})"
        ) from e
    if not hasattr(pipeline, "predict_proba") or len(getattr(pipeline, "classes_", [])) != len(
        metadata.labels
    ):
        raise CorruptArtifactError(
            model_path, f"holds a {type(pipeline).__name__}, not a classifier for {metadata.labels}"
        )
    if metadata.sklearn_version != sklearn.__version__:
        warnings.warn(
            f"{model_path}: trained with scikit-learn {metadata.sklearn_version}, running "
            f"{sklearn.__version__}; predictions may differ. Re-train with `make model`.",
            ModelVersionWarning,
            stacklevel=2,
        )
    model = SentimentModel(pipeline, metadata, path)
    model.predict(["warm-up"])  # builds the term -> column dict now, not on the first request
    return model
