"""Model experiments: measured alternatives to the default pipeline, each runnable as a module
(``python -m sentiment_model.experiments.float32``) and written to ``benchmarks/results/``."""
