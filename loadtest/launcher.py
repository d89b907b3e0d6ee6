"""Start a stage as a real server process (re-export until the launcher module lands)."""

from loadtest.bench import StageServer, free_port  # noqa: F401
