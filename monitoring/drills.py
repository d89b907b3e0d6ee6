"""Failure drills: a real Prometheus next to a real server, faults injected from outside.

Notebook 08 (``notebooks/08_debugging.ipynb``) drives these pieces; lesson 05 explains them::

    from loadtest.launcher import StageServer
    from monitoring import drills

    with StageServer("batched", env=...) as server, drills.Prometheus(server.url) as prom:
        with drills.Traffic(server.url, rate=100):             # steady, ordinary traffic
            alert = prom.wait_for_alert("InferenceLatencyP99High", timeout=60)
        df = prom.range("job:http_request_duration_seconds:p99_rate10s", start, end)

- :class:`Prometheus`: ``prometheus`` on a free port, with a temporary configuration that
  scrapes one server every second, the course's rules (``monitoring/rules/``) and a temporary
  data folder; helpers for the HTTP API (instant and range queries, alerts).
- injectors, each acting from outside the server as in production: :class:`Traffic` (paced
  requests from a client, well-formed or not), :func:`locust_ramp` (more users than the server
  can serve), :class:`CpuHog` (processes that compete for the server's core),
  :func:`tampered_copy` (a corrupted model artifact to deploy), :func:`heavy_batch_body` (the
  largest request the limits allow).
- :func:`read_log` (the server's JSON log as a DataFrame) and :func:`plot_panels` (Prometheus
  series over time, with the moments that matter marked).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import pandas as pd

from loadtest.launcher import CLIENT_CPU, StageServer, free_port, pin_prefix
from loadtest.steps import LOCUSTFILE, ensure_payload_file
from monitoring.prom import RULES_DIR, command, find_binary, install_help

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------
# Prometheus


def prometheus_config(target: str, rules_dir: Path = RULES_DIR, interval: str = "1s") -> str:
    """A Prometheus configuration (YAML) that scrapes ``target`` (host:port) as job inference."""
    rules = sorted(str(p) for p in Path(rules_dir).glob("*.yml"))
    rule_lines = "".join(f"  - {r}\n" for r in rules)
    return (
        f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        f"rule_files:\n{rule_lines}"
        "scrape_configs:\n  - job_name: inference\n    static_configs:\n"
        f'      - targets: ["{target}"]\n'
    )


class Prometheus:
    """A Prometheus process on 127.0.0.1 that scrapes one server, stopped by PID.

    ``server_url`` is the server's base URL (``http://127.0.0.1:PORT``). The configuration and
    the data live in a temporary folder, removed by :meth:`stop`; nothing is written to the
    repository. Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self, server_url: str, port: int | None = None, rules_dir: Path = RULES_DIR
    ) -> None:
        self.target = server_url.split("://", 1)[-1].rstrip("/")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rules_dir = Path(rules_dir)
        self.proc: subprocess.Popen | None = None
        self.workdir: Path | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        """Start Prometheus and wait until it is ready; raise with its output if it is not."""
        binary = find_binary("prometheus")
        if binary is None:
            raise FileNotFoundError(install_help())
        self.workdir = Path(tempfile.mkdtemp(prefix="prometheus-drill-"))
        config = self.workdir / "prometheus.yml"
        config.write_text(prometheus_config(self.target, self.rules_dir))
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
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            code = self.proc.returncode
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

    def range(
        self,
        expr: str,
        start: float,
        end: float | None = None,
        step: float = 1.0,
        label: str | None = None,
    ) -> pd.DataFrame:
        """A range query as a DataFrame: one column per series, indexed by seconds since
        ``start`` (a ``time.time()`` value). Columns are named by ``label``'s value, or by the
        series' labels, or ``value`` for a series without labels."""
        end = time.time() if end is None else end
        data = self._get("query_range", query=expr, start=start, end=end, step=step)
        columns = {}
        for series in data["result"]:
            metric = {k: v for k, v in series["metric"].items() if k != "__name__"}
            if label:
                name = metric.get(label, "")
            else:
                name = ",".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "job")
            values = {float(t) - start: float(v) for t, v in series["values"]}
            columns[name or "value"] = pd.Series(values)
        frame = pd.DataFrame(columns).sort_index()
        frame.index.name = "seconds"
        return frame

    def targets_up(self) -> bool:
        """Whether the last scrape of the server succeeded."""
        return self.value('up{job="inference"}', 0.0) == 1.0

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

    def wait_for_alert(
        self, name: str, state: str = "firing", timeout: float = 60.0, poll: float = 0.5
    ) -> dict | None:
        """Poll ``/api/v1/alerts`` until alert ``name`` is in ``state`` (firing, or pending:
        pending or firing); return its row as a dict plus ``waited_s``, or None at ``timeout``."""
        started = time.monotonic()
        wanted = {"firing"} if state == "firing" else {"pending", "firing"}
        while time.monotonic() - started < timeout:
            alerts = self.alerts()
            hit = alerts[(alerts["alertname"] == name) & alerts["state"].isin(wanted)]
            if len(hit):
                return hit.iloc[0].to_dict() | {"waited_s": round(time.monotonic() - started, 1)}
            time.sleep(poll)
        return None

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


# --------------------------------------------------------------------------------------------
# injectors: clients and neighbours, never the server's own code


class Traffic:
    """Open-loop client traffic in a background thread: ``rate`` requests per second, whatever
    the answers (as many independent callers would send), at most ``max_in_flight`` at once.

    ``body(i)`` gives the i-th request's JSON body (default: short review sentences); each
    request carries ``X-Request-ID: {prefix}-{i}``. :attr:`results` collects one row per
    answer: send time, status, client-side latency, ``Retry-After``.
    """

    def __init__(
        self,
        server_url: str,
        rate: float,
        body: Callable[[int], object] | None = None,
        path: str = "/predict",
        prefix: str = "load",
        max_in_flight: int = 256,
        timeout: float = 30.0,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.url, self.rate, self.path, self.prefix = server_url, rate, path, prefix
        self.body = body or default_body
        self.max_in_flight, self.timeout = max_in_flight, timeout
        self.results: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Traffic:
        """Start sending in a background thread."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> pd.DataFrame:
        """Stop sending, wait for the answers in flight; return :meth:`frame`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)
        return self.frame()

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def frame(self) -> pd.DataFrame:
        """The answers so far, one row each."""
        cols = ["sent", "request_id", "status", "latency_s", "retry_after"]
        return pd.DataFrame(list(self.results), columns=cols)

    async def _one(self, client: httpx.AsyncClient, i: int, gate: asyncio.Semaphore) -> None:
        request_id = f"{self.prefix}-{i}"
        sent = time.time()
        try:
            resp = await client.post(
                self.path, json=self.body(i), headers={"X-Request-ID": request_id}
            )
            status, retry_after = resp.status_code, resp.headers.get("retry-after")
        except httpx.HTTPError:
            status, retry_after = 0, None  # no answer at all (connection refused, timeout)
        finally:
            gate.release()
        self.results.append(
            {
                "sent": sent,
                "request_id": request_id,
                "status": status,
                "latency_s": time.time() - sent,
                "retry_after": retry_after,
            }
        )

    async def _run(self) -> None:
        gate = asyncio.Semaphore(self.max_in_flight)
        limits = httpx.Limits(max_connections=self.max_in_flight)
        tasks: set[asyncio.Task] = set()
        async with httpx.AsyncClient(
            base_url=self.url, timeout=self.timeout, limits=limits
        ) as client:
            start = time.monotonic()
            for i in itertools.count():
                if self._stop.is_set():
                    break
                delay = start + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()  # a full client waits: the offered rate drops
                task = asyncio.create_task(self._one(client, i, gate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout)


SENTENCES = (
    "A warm, funny and surprisingly moving film.",
    "The plot is thin and the jokes fall flat.",
    "Beautifully shot, but far too long.",
    "One of the best performances of the year.",
    "I walked out halfway through.",
)


def default_body(i: int) -> dict:
    """An ordinary ``/predict`` body: a short review sentence."""
    return {"text": SENTENCES[i % len(SENTENCES)]}


def malformed_body(i: int) -> dict:
    """What a buggy client release sends: the field is misspelt (the server answers 422)."""
    return {"txet": SENTENCES[i % len(SENTENCES)]}


def heavy_batch_body(texts: Sequence[str], max_items: int = 64, max_chars: int = 10_000) -> dict:
    """The largest ``/predict/batch`` body the default limits accept: ``max_items`` texts of
    ``max_chars`` characters each, made of real reviews (a legal request, just an expensive
    one: about 640 kB, under the 1 MB body limit)."""
    joined = " ".join(texts)
    while len(joined) < max_items * max_chars:
        joined += " " + joined
    return {
        "texts": [
            joined[k * max_chars : (k + 1) * max_chars].strip().ljust(max_chars, ".")
            for k in range(max_items)
        ]
    }


def locust_ramp(
    server_url: str,
    users: int,
    spawn_rate: float,
    seconds: float,
    workdir: Path,
    profile: str = "short",
    batch_share: float = 0.1,
) -> subprocess.Popen:
    """Start headless locust in the background (pinned to the client core where possible):
    ``users`` closed-loop users, ``spawn_rate`` new users per second, for ``seconds``. Its
    output goes to ``workdir/locust.log``; wait on the returned process. Locust exits 1 when
    requests failed, which is the point of an overload drill."""
    workdir = Path(workdir)
    payloads = ensure_payload_file(workdir)
    cmd = [*pin_prefix(CLIENT_CPU), sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    cmd += ["--headless", "-u", str(users), "-r", str(spawn_rate), "-t", f"{seconds:g}s"]
    cmd += ["--host", server_url, "--only-summary", "--loglevel", "WARNING"]
    env = os.environ | {
        "LOADTEST_PROFILE": profile,
        "LOADTEST_PAYLOADS": str(payloads),
        "LOADTEST_BATCH_SHARE": str(batch_share),
    }
    out = open(workdir / "locust.log", "wb")  # noqa: SIM115 - the child keeps its own copy
    try:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    finally:
        out.close()


class CpuHog:
    """``count`` busy-looping processes pinned to ``cpu``: a noisy neighbour (another service,
    a backup, a runaway cron job) on the server's core. Stopped by PID."""

    def __init__(self, cpu: int, count: int = 4) -> None:
        self.cpu, self.count = cpu, count
        self.procs: list[subprocess.Popen] = []

    def start(self) -> CpuHog:
        """Start the busy loops."""
        pin = pin_prefix(self.cpu)
        for _ in range(self.count):
            self.procs.append(subprocess.Popen([*pin, sys.executable, "-c", "while True: pass"]))
        return self

    @property
    def pids(self) -> list[int]:
        """The hogs' process ids."""
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        """Kill every hog by PID; idempotent."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        self.procs.clear()

    def __enter__(self) -> CpuHog:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def tampered_copy(model_dir: Path, dest: Path) -> Path:
    """Copy the artifact folder ``model_dir`` to ``dest`` and flip one byte in the middle of
    its model file: what a truncated upload or a bad disk delivers. Returns ``dest``."""
    shutil.copytree(model_dir, dest)
    model_file = next(p for p in Path(dest).iterdir() if p.suffix == ".skops")
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    return Path(dest)


class DeployedServer(StageServer):
    """A :class:`StageServer` whose ``start()`` returns as soon as the process answers
    ``/health``, ready or not: a deploy that may never become ready (a bad artifact)."""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server did not answer /health:\n{self.log_tail()}")


# --------------------------------------------------------------------------------------------
# reading the evidence


def read_log(path: Path | str) -> pd.DataFrame:
    """The server's JSON log, one row per line (as in notebook 05), rotated files included
    (``requests.log.2``, ``requests.log.1``, then ``requests.log``: oldest first)."""
    path = Path(path)
    backups = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    backups.sort(key=lambda p: -int(p.suffix[1:]))
    frames = [
        pd.read_json(p, lines=True, dtype=False, convert_dates=["timestamp"])
        for p in [*backups, path]
    ]
    log = pd.concat(frames, ignore_index=True)
    for column in ("status", "batch_size", "texts", "text_chars"):
        if column in log:
            log[column] = log[column].astype("Int64")
    return log


def plot_panels(
    prom: Prometheus,
    panels: Sequence[tuple[str, Mapping[str, str] | str]],
    start: float,
    end: float | None = None,
    marks: Mapping[str, float] | None = None,
    title: str | None = None,
):
    """One subplot per panel, stacked on a shared time axis (seconds since ``start``).

    ``panels``: ``(ylabel, expr)`` or ``(ylabel, {legend: expr, ...})``; ``marks``: vertical
    lines ``{text: time.time() value}`` (the injection, the alert firing, the fix).
    Returns the figure.
    """
    import matplotlib.pyplot as plt

    end = time.time() if end is None else end
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.1 * len(panels)), sharex=True)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (ylabel, exprs) in zip(axes, panels, strict=True):
        exprs = {"": exprs} if isinstance(exprs, str) else exprs
        for legend, expr in exprs.items():
            frame = prom.range(expr, start, end)
            for column in frame:
                name = legend or ("" if column == "value" else column)
                ax.plot(frame.index, frame[column], label=name or None, lw=1.4)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        for i, (text, t) in enumerate((marks or {}).items()):  # named in the top legend only
            label = text if ax is axes[0] else None
            ax.axvline(t - start, color=f"C{i + 3}", ls=(0, (4, 2 + i)), lw=1.2, label=label)
        if any(line.get_label()[:1] != "_" for line in ax.get_lines()):
            ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("seconds")
    axes[-1].set_xlim(0, end - start)
    if title:
        fig.suptitle(title, y=1.0 + 0.02 * (4 - min(len(panels), 4)))
    fig.tight_layout()
    return fig
