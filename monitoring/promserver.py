"""A real Prometheus for the failure drills: a temporary configuration that scrapes one server
every second with the course's rules (``monitoring/rules/``), the process on a free port of
127.0.0.1 (stopped by PID), and helpers for its HTTP API (instant and range queries, alerts).

Notebook 08 uses it through :mod:`monitoring.drills` (``drills.Prometheus``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pandas as pd

from loadtest.launcher import free_port, stop_process
from monitoring.prom import command, find_binary, install_help, prometheus_config


class Prometheus:
    """A Prometheus process on 127.0.0.1 that scrapes one server, stopped by PID.

    ``server_url`` is the server's base URL (``http://127.0.0.1:PORT``). The configuration and
    the data live in a temporary folder, removed by :meth:`stop`; nothing is written to the
    repository. Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, server_url: str) -> None:
        self.target = server_url.split("://", 1)[-1].rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.workdir: Path | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        """Start Prometheus and wait until it is ready; raise with its output if it is not."""
        binary = find_binary("prometheus")
        if binary is None:
            raise FileNotFoundError(install_help())
        self.workdir = Path(tempfile.mkdtemp(prefix="prometheus-drill-"))
        config = self.workdir / "prometheus.yml"
        config.write_text(prometheus_config(self.target))
        cmd = command(binary, config, self.workdir / "data", f"127.0.0.1:{self.port}")
        self._out = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=self._out, stderr=self._out)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = (self.workdir / "prometheus.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"Prometheus did not start:\n{out[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def stop(self) -> int | None:
        """SIGTERM by PID (SIGKILL after 10 s), then remove the temporary folder; idempotent."""
        code = None
        if self.proc is not None:
            code = stop_process(self.proc, timeout=10)
            self._out.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        return code

    def __enter__(self) -> Prometheus:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the HTTP API ------------------------------------------------------------------------
    def _get(self, path: str, **params) -> dict | list:
        resp = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = resp.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} {params}: {body.get('error', resp.text)}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query: ``[{"metric": {labels}, "value": [t, "v"]}, ...]``."""
        return self._get("query", query=expr)["result"]

    def value(self, expr: str, default: float = float("nan")) -> float:
        """The value of an instant query that returns one series (``default`` if none)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else default

    def range(self, expr: str, start: float, end: float | None = None) -> pd.DataFrame:
        """A range query (one point a second) as a DataFrame: one column per series, indexed by
        seconds since ``start`` (a ``time.time()`` value). Columns are named by the series'
        labels (``job`` left out), or ``value`` for a series without labels."""
        end = time.time() if end is None else end
        data = self._get("query_range", query=expr, start=start, end=end, step=1.0)
        columns = {}
        for series in data["result"]:
            metric = {k: v for k, v in series["metric"].items() if k != "__name__"}
            name = ",".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "job")
            values = {float(t) - start: float(v) for t, v in series["values"]}
            columns[name or "value"] = pd.Series(values)
        frame = pd.DataFrame(columns).sort_index()
        frame.index.name = "seconds"
        return frame

    def alerts(self) -> pd.DataFrame:
        """``/api/v1/alerts``: every pending or firing alert, one row each."""
        rows = []
        for a in self._get("alerts")["alerts"]:
            labels = dict(a["labels"])
            rows.append(
                {
                    "alertname": labels.pop("alertname"),
                    "state": a["state"],
                    "severity": labels.pop("severity", ""),
                    "active_at": pd.Timestamp(a["activeAt"]),
                    "value": float(a["value"]),
                    "labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
                    "summary": a["annotations"].get("summary", ""),
                    "runbook": a["annotations"].get("runbook", ""),
                }
            )
        columns = ["alertname", "state", "severity", "active_at", "value", "labels", "summary"]
        return pd.DataFrame(rows, columns=[*columns, "runbook"])

    def wait_for_alert(self, name: str, timeout: float = 60.0) -> dict | None:
        """Poll until alert ``name`` fires; return its row as a dict plus ``waited_s``, or None
        at ``timeout``."""
        return self.wait_for_alerts([name], timeout).get(name)

    def wait_for_alerts(self, names: Sequence[str], timeout: float = 30.0) -> dict[str, dict]:
        """Poll until every alert in ``names`` fires or ``timeout`` passes; return
        ``{name: row}`` for those that fired (``waited_s``: seconds until each was seen)."""
        started, fired = time.monotonic(), {}
        while len(fired) < len(names) and time.monotonic() - started < timeout:
            alerts = self.alerts()
            for name in names:
                hit = alerts[(alerts["alertname"] == name) & (alerts["state"] == "firing")]
                if name not in fired and len(hit):
                    waited = round(time.monotonic() - started, 1)
                    fired[name] = hit.iloc[0].to_dict() | {"waited_s": waited}
            if len(fired) < len(names):  # no pause after the last one: return as it fires
                time.sleep(0.5)
        return fired

    def wait_quiet(self, timeout: float = 60.0, poll: float = 0.5) -> float:
        """Wait until no alert is pending or firing; return the seconds waited (raise at
        ``timeout``). A drill starts from a quiet system so its alerts are its own."""
        started = time.monotonic()
        while True:
            alerts = self.alerts()
            if alerts.empty:
                return round(time.monotonic() - started, 1)
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"alerts still active after {timeout} s:\n{alerts}")
            time.sleep(poll)

    def wait_scraped(self, timeout: float = 30.0, samples: int = 2) -> None:
        """Wait until the server has been scraped successfully ``samples`` times in a row."""
        deadline = time.monotonic() + timeout
        while self.value('sum_over_time(up{job="inference"}[10s])', 0.0) < samples:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Prometheus has not scraped {self.target} in {timeout} s")
            time.sleep(0.5)
