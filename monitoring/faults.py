"""Faults for the failure drills, each injected from outside the server as in production.

:class:`Traffic` (paced requests from a client, well-formed or not, with the bodies
:func:`default_body`, :func:`malformed_body`, :func:`heavy_batch_body`), :func:`locust_ramp`
(more users than the server can serve), :class:`CpuHog` (processes that compete for the
server's core), :func:`tampered_copy` (a corrupted model artifact to deploy) and
:class:`DeployedServer` (a deploy that may never become ready).

Notebook 08 uses them through :mod:`monitoring.drills` (``drills.Traffic`` ...).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pandas as pd

from loadtest.launcher import CLIENT_CPU, StageServer, pin_prefix
from loadtest.steps import LOCUSTFILE, ensure_payload_file

ROOT = Path(__file__).resolve().parent.parent


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

    def _answers(self, client: httpx.Client) -> bool:
        return client.get("/health").status_code == 200
