"""loadtest/layers.py's arithmetic: per-round costs, the saturation filter, the CLI bounds."""

from __future__ import annotations

import json

import pytest

from loadtest import layers


def row(config: str, off: str, rnd: int, cpu_us: float, busy: float = 95.0) -> dict:
    return {
        "config": config,
        "off": off,
        "round": rnd,
        "rps": 1e6 / cpu_us * busy / 100,
        "cpu_us": cpu_us,
        "server_cpu_pct": busy,
        "failed": 0,
    }


def test_cost_is_taken_round_by_round_and_unbusy_rounds_are_left_out():
    rows = [
        row("all on", "", 0, 200),
        row("log off", "access_log", 0, 180),
        row("all on", "", 1, 250),
        row("log off", "access_log", 1, 225),
        row("all on", "", 2, 200),
        row("log off", "access_log", 2, 400, busy=20),  # starved client: not a maximum
    ]
    base, off = layers.summarise(rows)
    assert base["cost"] == 0 and base["rounds_used"] == 3
    assert off["rounds_used"] == 2
    assert off["cost"] == pytest.approx(0.1)  # 1 - 180/200 and 1 - 225/250
    assert off["layers_us"] == pytest.approx(22.5)  # median of 20 and 25
    table = layers.markdown_table([base, off])
    assert "| all on: (empty) |" in table and "`access_log`" in table and "10%" in table


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--rounds", "50"], ["--seconds", "100"]])
def test_unbounded_runs_are_refused(argv):
    with pytest.raises(SystemExit):
        layers.main(argv)


def test_requests_are_complete_http_messages():
    [raw] = layers.predict_requests(["Café!"])
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"text": "Café!"}
