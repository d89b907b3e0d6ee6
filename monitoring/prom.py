"""Find Prometheus, write its configuration and build its command line (standard library only,
so ``tasks.py`` can use it before .venv).

``python3 tasks.py monitor [--port P | --target HOST:PORT]`` runs :func:`command`: Prometheus
with a configuration written by :func:`write_config` for that target (default 127.0.0.1:8000,
the same as ``monitoring/prometheus.yml``) into ``monitoring/data/`` (git-ignored, with its
data), its web UI and HTTP API on http://127.0.0.1:9090, as a child of tasks.py that Ctrl-C or
SIGTERM stops cleanly (exit 0); without the binary it prints :func:`install_help`.

The UI's pages are not at the same paths everywhere: Prometheus from prometheus.io or Homebrew
serves ``/alerts``; Debian's package (2.42) is built without the React UI and serves only the
classic one, ``/classic/alerts`` (``/alerts`` is 404 there). :data:`UI_PAGES` lists both.
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
TARGET = "127.0.0.1:8000"  # `python3 tasks.py serve`
# Where each page is: the React UI (prometheus.io builds, Homebrew), then the classic UI only
# (Debian's package). The first path that answers 200 is the one to open.
UI_PAGES = {
    "graph": ("/graph", "/classic/graph"),
    "alerts": ("/alerts", "/classic/alerts"),
    "targets": ("/targets", "/classic/targets"),
}
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


def prometheus_config(target: str = TARGET, rules_dir: Path = RULES_DIR) -> str:
    """A Prometheus configuration (YAML) that scrapes ``target`` (host:port) as job inference
    every second, with the course's rules (``rules_dir/*.yml``, absolute paths): what
    ``monitoring/prometheus.yml`` says, for any target."""
    rules = sorted(str(p) for p in Path(rules_dir).glob("*.yml"))
    rule_lines = "".join(f"  - {r}\n" for r in rules)
    return (
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n{rule_lines}"
        "scrape_configs:\n  - job_name: inference\n    static_configs:\n"
        f'      - targets: ["{target}"]\n'
    )


def write_config(target: str = TARGET, data_dir: Path | None = None) -> Path:
    """Write :func:`prometheus_config` for ``target`` to ``prometheus.yml`` in ``data_dir``
    (default :data:`DATA_DIR`, git-ignored)."""
    data_dir = Path(data_dir or DATA_DIR)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "prometheus.yml"
    path.write_text(prometheus_config(target))
    return path


def parse_target(text: str) -> str:
    """``HOST:PORT`` checked (port 1-65535, a host given), or ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8001)")
    return text


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` among command-line ``args`` (``--flag=V`` or ``--flag V``)."""
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None
