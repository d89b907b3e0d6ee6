"""Prometheus recording rules for the model's signals, generated from the artifact's reference.

At export the artifact's ``metadata.json`` keeps, under ``reference``, the distribution of each
signal (``confidence``, ``tokens``, ``unknown_ratio``) on held-out texts as fractions per
histogram bucket, and the mix of predicted labels (sentiment_model/signals.py). The server
exports the same signals as Prometheus histograms with the same buckets. These rules compare the
two, every evaluation, over the last :data:`WINDOW`::

    python -m monitoring.drift_rules [MODEL_DIR | METADATA_JSON] > monitoring/rules/drift.yml

(default: the model ``models/LATEST`` names). The committed ``monitoring/rules/drift.yml`` is
this command's output for the shipped model's reference, kept in
``monitoring/tests/reference_metadata.json`` so the promtool tests are deterministic; a test
checks that regenerating from that file gives the committed one. Retrain the model, regenerate
the rules: a reference belongs to one model version (the ``model_version`` label).

The statistic is the **population stability index** (PSI) over the histogram buckets::

    PSI = sum over buckets i of (p_i - q_i) * ln(p_i / q_i)

with ``q_i`` the reference fraction of bucket ``i`` and ``p_i`` the recent window's fraction,
from ``increase()`` of the ``_bucket`` series (cumulative, so bucket ``i`` is the difference of
two ``le`` series). Empty buckets would give ``ln(0)``: both fractions are clamped at
:data:`EPSILON`. PSI is a symmetrised Kullback-Leibler divergence, 0 when the distributions are
equal, and reads the same for every signal whatever its unit; the usual reading is below 0.1 no
change, 0.1 to 0.25 a moderate one, above 0.25 a significant shift (the alert's threshold,
monitoring/rules/model_alerts.yml).

Standard library only, like monitoring/prom.py, so it runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_ROOT = ROOT / "models"
REFERENCE_FILE = ROOT / "monitoring" / "tests" / "reference_metadata.json"
RULES_FILE = ROOT / "monitoring" / "rules" / "drift.yml"

# The server's histograms, by signal (lessons/11_monitoring/inference_server.py).
METRICS = {
    "confidence": "inference_prediction_confidence",
    "tokens": "inference_input_tokens",
    "unknown_ratio": "inference_unknown_token_ratio",
}
PREDICTIONS = "inference_predictions_total"  # {label}: one per text scored
FEEDBACK = "inference_feedback_total"  # {outcome="correct"|"wrong"}: one per POST /feedback
# The course's time scale: 1 s scrapes, so 20 s hold 20 samples of each counter (production:
# 15-60 s scrapes and windows of an hour or more; see lessons/11_monitoring/README.md).
WINDOW = "20s"
# The floor of a fraction, for buckets empty in the window or in the reference: ln(0) is -Inf.
# One text in 10,000; an empty bucket whose reference fraction is q then adds about
# q * ln(q / EPSILON) to the PSI (0.005 for the rarest reference bucket, 0.0018).
EPSILON = 1e-4


def go_float(value: float | str) -> str:
    """A bucket bound as Prometheus' Python client writes it in ``le`` (``5`` -> ``"5.0"``)."""
    if value == "+Inf" or (isinstance(value, float) and math.isinf(value)):
        return "+Inf"
    return repr(float(value))


def bucket_name(value: float | str) -> str:
    """The ``bucket`` label of a per-bucket share: its upper bound, as short as it reads
    (``5``, ``0.15``, ``+Inf``)."""
    text = go_float(value)
    return text[:-2] if text.endswith(".0") else text


def load_reference(path: Path | str | None = None) -> tuple[str, dict]:
    """``(model_version, reference)`` from a model folder, its ``metadata.json`` or a file of
    the same shape; default: the model ``models/LATEST`` names."""
    if path is None:
        path = MODELS_ROOT / (MODELS_ROOT / "LATEST").read_text().strip()
    path = Path(path)
    if path.is_dir():
        path = path / "metadata.json"
    metadata = json.loads(path.read_text())
    if "reference" not in metadata:
        raise ValueError(
            f"{path} has no 'reference': export the model with the signals' reference "
            "(python -m sentiment_model.train)"
        )
    return metadata["version"], metadata["reference"]


def _share_expr(metric: str, upper: str, lower: str | None, window: str = WINDOW) -> str:
    def inc(le: str) -> str:
        return f'sum by (job) (increase({metric}_bucket{{le="{le}"}}[{window}]))'

    top = inc(upper) if lower is None else f"(\n    {inc(upper)}\n    - {inc(lower)}\n  )"
    return f"clamp_min(\n  {top}\n  / {inc('+Inf')},\n  0\n)"


def _rule(record: str, expr: str, labels: dict[str, str], comment: str = "") -> str:
    lab = ", ".join(f'{k}: "{v}"' for k, v in labels.items())
    out = f"      # {comment}\n" if comment else ""
    out += f"      - record: {record}\n"
    if "\n" in expr:
        body = "\n".join(("          " + line) if line else "" for line in expr.splitlines())
        out += f"        expr: |\n{body}\n"
    else:
        out += f"        expr: {expr}\n"
    if lab:
        out += f"        labels: {{{lab}}}\n"
    return out


def generate(version: str, reference: dict, source: str = "MODEL_DIR", window: str = WINDOW) -> str:
    """The rules file (YAML text) for a model ``version`` and its ``reference``, comparing the
    last ``window`` (a Prometheus duration: ``20s``, ``1h``) with it. The rule names carry the
    window (``...:psi20s``); model_alerts.yml names the default's."""
    w = window
    lines = [
        f"# GENERATED by `python -m monitoring.drift_rules {source} > monitoring/rules/drift.yml`",
        "# from the artifact's reference (sentiment_model/signals.py): do not edit by hand.",
        f"# Model {version}: {reference['n']} held-out texts "
        f"({reference.get('split', '?')} split).",
        f"# Every recent figure is over the last {w} (the course uses 20s, production an hour or",
        "# more: lessons/11_monitoring/README.md); the alerts are in model_alerts.yml.",
        "groups:",
        "  - name: inference-model",
        "    rules:",
    ]
    rules = []
    # 1. The reference, as constant series: the rules below join on them, plots draw them.
    for signal in METRICS:
        ref = reference["signals"][signal]
        for i, (le, q) in enumerate(zip(ref["le"], ref["fractions"], strict=True)):
            note = (
                f"Reference: the share of held-out texts per bucket of each signal, floored at "
                f"{EPSILON:g}"
                if not rules
                else ""
            )
            labels = {"signal": signal, "bucket": bucket_name(le), "model_version": version}
            rules.append(
                _rule(
                    "signal_bucket:inference_signal_share:reference",
                    f"vector({max(q, EPSILON):.6g})",
                    labels,
                    note if i == 0 else "",
                )
            )
    for i, (label, share) in enumerate(sorted(reference["label_mix"].items())):
        rules.append(
            _rule(
                "label:inference_prediction_share:reference",
                f"vector({share:.6g})",
                {"label": label, "model_version": version},
                "Reference: the mix of predicted labels on the held-out texts" if i == 0 else "",
            )
        )
    # 2. The recent window's share per bucket (bucket = upper bound; the first from 0).
    for signal, metric in METRICS.items():
        les = [go_float(le) for le in reference["signals"][signal]["le"]]
        for i, le in enumerate(les):
            comment = (
                f"Recent: the share of the last {w}'s texts in each bucket of {metric}"
                if i == 0
                else ""
            )
            expr = _share_expr(metric, le, les[i - 1] if i else None, w)
            rules.append(
                _rule(
                    f"job_signal_bucket:inference_signal_share:ratio{w}",
                    expr,
                    {"signal": signal, "bucket": bucket_name(le)},
                    comment,
                )
            )
    # 3. PSI per signal, from the two.
    share = f"clamp_min(job_signal_bucket:inference_signal_share:ratio{w}, {EPSILON:g})"
    ref = "signal_bucket:inference_signal_share:reference"
    psi = (
        "sum by (job, signal) (\n"
        f"  ({share}\n    - on (signal, bucket) group_left {ref})\n"
        f"  * ln({share}\n    / on (signal, bucket) group_left {ref})\n"
        ")"
    )
    rules.append(
        _rule(
            f"job_signal:inference_drift:psi{w}",
            psi,
            {},
            "The drift statistic: population stability index of each signal, recent vs reference",
        )
    )
    # 4. How many texts and answers the window holds (a PSI of ten texts is noise), the label
    # mix and the accuracy the callers' feedback reports.
    rules.append(
        _rule(
            f"job:inference_predictions:increase{w}",
            f"sum by (job) (increase({PREDICTIONS}[{w}]))",
            {},
            f"Texts scored in the last {w}: the alerts need enough of them",
        )
    )
    rules.append(
        _rule(
            f"job_label:inference_prediction_share:ratio{w}",
            f"sum by (job, label) (increase({PREDICTIONS}[{w}]))\n"
            f"  / on (job) group_left sum by (job) (increase({PREDICTIONS}[{w}]))",
            {},
            "The label mix: the share of each predicted label",
        )
    )
    rules.append(
        _rule(
            f"job:inference_feedback:increase{w}",
            f"sum by (job) (increase({FEEDBACK}[{w}]))",
            {},
            f"Feedback received in the last {w} (the true label of an earlier request)",
        )
    )
    rules.append(
        _rule(
            f"job:inference_feedback_accuracy:ratio{w}",
            "(\n"
            f'  sum by (job) (increase({FEEDBACK}{{outcome="correct"}}[{w}]))\n'
            f"    or sum by (job) (increase({FEEDBACK}[{w}])) * 0\n"
            f") / sum by (job) (increase({FEEDBACK}[{w}]))",
            {},
            "Accuracy from feedback: the share of answers the callers confirmed (0, not no value,"
            " when none was right)",
        )
    )
    return "\n".join(lines) + "\n" + "".join(rules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.drift_rules",
        description="Print the drift recording rules for a model's reference (YAML).",
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="a model folder or its metadata.json (default: the model models/LATEST names)",
    )
    parser.add_argument(
        "--window",
        default=WINDOW,
        help=f"the recent window, a Prometheus duration (default {WINDOW}; production: 1h)",
    )
    args = parser.parse_args(argv)
    try:
        version, reference = load_reference(args.model)
    except (OSError, ValueError, KeyError) as e:
        print(f"cannot read a reference: {e}", file=sys.stderr)
        return 1
    source = args.model or "MODEL_DIR"
    if args.window != WINDOW:
        source += f" --window {args.window}"
    sys.stdout.write(generate(version, reference, source, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
