"""Find Prometheus and build its command line (standard library only, so ``tasks.py`` can use
it before .venv).

``python3 tasks.py monitor`` runs :func:`command`: Prometheus with ``monitoring/prometheus.yml``
(scrapes the server on 127.0.0.1:8000), its data in ``monitoring/data/`` (git-ignored) and its
web UI and HTTP API on http://127.0.0.1:9090, as a child of tasks.py that Ctrl-C or SIGTERM stops
cleanly (exit 0); without the binary it prints :func:`install_help`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
CONFIG = MONITORING / "prometheus.yml"
RULES_DIR = MONITORING / "rules"
DATA_DIR = MONITORING / "data"
LISTEN = "127.0.0.1:9090"
# Where packages and release archives put the binary when it is not on PATH.
COMMON_LOCATIONS = (
    "/usr/bin/prometheus",
    "/usr/local/bin/prometheus",
    "/opt/homebrew/bin/prometheus",
    "/opt/prometheus/prometheus",
    str(Path.home() / ".local/bin/prometheus"),
)
INSTALL_HELP = """\
{name} not found (looked on PATH and in {where}). Install Prometheus, then run this again:

  Debian / Ubuntu:  sudo apt-get install -y --no-install-recommends prometheus
                    sudo systemctl disable --now prometheus   # we run our own; frees port 9090
  macOS:            brew install prometheus
  anywhere else:    download the archive for your system from
                    https://prometheus.io/download/ (e.g. prometheus-2.53.*.linux-amd64.tar.gz),
                    tar xzf it, and put its prometheus and promtool on PATH
                    (or in ~/.local/bin).
"""


def find_binary(name: str = "prometheus") -> str | None:
    """``name`` (prometheus or promtool) on PATH, else in a common location, else None."""
    found = shutil.which(name)
    if found:
        return found
    for location in COMMON_LOCATIONS:
        candidate = Path(location).with_name(name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def install_help(name: str = "prometheus") -> str:
    """How to install Prometheus (which brings promtool), for a message."""
    return INSTALL_HELP.format(name=name, where=", ".join(COMMON_LOCATIONS))


def command(
    binary: str,
    config: Path = CONFIG,
    data_dir: Path = DATA_DIR,
    listen: str = LISTEN,
    retention: str = "2d",
    overrides: Sequence[str] = (),
) -> list[str]:
    """The Prometheus command line: our config, our data folder, listening on ``listen`` only.

    ``overrides`` (a user's flags) are appended and replace our flag of the same name
    (Prometheus refuses a flag given twice), e.g. ``--web.listen-address=127.0.0.1:9191``.
    """
    ours = [
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={listen}",
        "--log.level=warn",
    ]
    given = {a.split("=", 1)[0] for a in overrides}
    return [binary, *(f for f in ours if f.split("=", 1)[0] not in given), *overrides]
