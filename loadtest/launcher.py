"""Start real server processes: ``StageServer`` and ``free_port`` (see loadtest/bench.py)."""

from loadtest.bench import StageServer, free_port  # noqa: F401
