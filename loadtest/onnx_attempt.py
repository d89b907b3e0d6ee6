"""The ONNX Runtime attempt: convert the default model with skl2onnx and time it against sklearn.

    pip install skl2onnx==1.20.0 onnxruntime==1.32.0    # not in requirements.txt: an experiment
    python -m loadtest.onnx_attempt                      # writes benchmarks/results/onnx/

Steps, each recorded in ``benchmarks/results/onnx/onnx_attempt.json`` and printed:

1. convert the shipped pipeline as it is (the converter refuses ``strip_accents='unicode'``);
2. convert a copy with ``strip_accents=None`` (a different model for accented texts: how many
   test-split labels change is reported), and check the ONNX model against that copy on the
   test split (labels, largest probability difference);
3. time it in-process on one core (CPU time), one text per call and in batches of 32, short
   and long texts, next to scikit-learn and the direct scorer on the same texts.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from pathlib import Path

import numpy as np

from loadtest.ceiling import pinned_to_cpu
from loadtest.payloads import PROFILES
from sentiment_model import load_model
from sentiment_model.data import clean_text, load_splits

OUT = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "onnx"


def convert(pipeline):
    """skl2onnx's conversion of a text pipeline (one string column in, probabilities out)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType

    return to_onnx(
        pipeline,
        initial_types=[("text", StringTensorType([None, 1]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )


def cpu_rate(fn, texts: list[str], batch: int, seconds: float) -> float:
    """Texts per second of CPU time for ``fn(batch_of_texts)`` over about ``seconds``."""
    fn(texts[:batch])
    done, i, cpu = 0, 0, 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        items = [texts[(i + k) % len(texts)] for k in range(batch)]
        i = (i + batch) % len(texts)
        c0 = time.thread_time()
        fn(items)
        cpu += time.thread_time() - c0
        done += batch
    return done / cpu


def main(seconds: float = 1.5) -> dict:
    """Run the attempt, write the JSON record, return it."""
    import onnxruntime as ort
    import skl2onnx

    report: dict = {
        "skl2onnx": skl2onnx.__version__,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
    }
    model = load_model()
    report["model_version"] = model.version
    report["vocabulary_terms"] = len(model.pipeline.steps[0][1].vocabulary_)

    try:  # 1. the shipped pipeline
        convert(model.pipeline)
        report["shipped_pipeline"] = "converted"
    except Exception as e:  # the refusal is the finding
        report["shipped_pipeline"] = f"refused: {type(e).__name__}: {str(e)[:300]}"
    print("1. shipped pipeline:", report["shipped_pipeline"])

    # 2. the same fitted pipeline without accent stripping
    variant = copy.deepcopy(model.pipeline)
    variant.steps[0][1].set_params(strip_accents=None)
    t0 = time.perf_counter()
    try:
        onx = convert(variant)
    except Exception as e:
        report["variant"] = f"refused: {type(e).__name__}: {str(e)[:300]}"
        print("2.", report["variant"])
        return _write(report)
    report["convert_seconds"] = round(time.perf_counter() - t0, 1)
    # The converter asks StringNormalizer for the en_US.UTF-8 locale, which a slim image does
    # not have (onnxruntime then refuses the model); C.UTF-8 lower-cases Unicode too.
    from onnx import helper

    for node in onx.graph.node:
        if node.op_type == "StringNormalizer":
            kept = [a for a in node.attribute if a.name != "locale"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("locale", "C.UTF-8")])
            report["string_normalizer_locale"] = "default en_US.UTF-8 -> C.UTF-8"
        # onnxruntime's Tokenizer compiles the pattern with RE2, which has no (?u) flag (and
        # whose \w is ASCII-only): one more way the ONNX model differs from the pipeline.
        for attribute in node.attribute:
            if node.op_type == "Tokenizer" and attribute.name == "tokenexp":
                before = attribute.s.decode()
                attribute.s = before.replace("(?u)", "").encode()
                report["tokenizer_tokenexp"] = f"{before} -> {attribute.s.decode()}"
    report["onnx_bytes"] = len(onx.SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one core, like the servers
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        onx.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    output = [o.name for o in session.get_outputs()][-1]  # probabilities

    def onnx_proba(texts: list[str]) -> np.ndarray:
        return session.run([output], {"text": np.array(texts, dtype=object).reshape(-1, 1)})[0]

    test = load_splits().test
    texts = [clean_text(t) for t in test["text"]]
    shipped = model.pipeline.predict_proba(texts)
    plain = variant.predict_proba(texts)
    converted = np.vstack([onnx_proba(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    report["test_texts"] = len(texts)
    report["labels_changed_by_no_accent_stripping"] = int(
        (shipped.argmax(1) != plain.argmax(1)).sum()
    )
    report["onnx_vs_variant_labels_differ"] = int((converted.argmax(1) != plain.argmax(1)).sum())
    report["onnx_vs_variant_max_abs_diff"] = float(np.abs(converted - plain).max())
    print("2. variant converted:", {k: report[k] for k in list(report)[-5:]})

    # 3. speed, one core
    by_profile = {
        p: [clean_text(t) for t in test.loc[test["source"] == src, "text"]]
        for p, src in PROFILES.items()
    }
    rows = []
    with pinned_to_cpu(0):
        for profile, items in by_profile.items():
            for batch in (1, 32):
                row = {"profile": profile, "batch_size": batch}
                model.use_scorer("sklearn")
                row["sklearn"] = cpu_rate(model.predict_proba, items, batch, seconds)
                model.use_scorer("direct")
                row["direct"] = cpu_rate(model.predict_proba, items, batch, seconds)
                row["onnxruntime"] = cpu_rate(onnx_proba, items, batch, seconds)
                rows.append({k: round(v) if isinstance(v, float) else v for k, v in row.items()})
                print("3.", rows[-1])
    report["texts_per_cpu_second"] = rows
    return _write(report)


def _write(report: dict) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "onnx_attempt.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {OUT / 'onnx_attempt.json'}")
    return report


if __name__ == "__main__":
    main()
