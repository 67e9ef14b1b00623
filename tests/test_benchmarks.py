"""The benchmark entry points run and report; how fast anything is is not checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import contenders
from benchmarks import roundtrips
from benchmarks.runner import Results

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_benchmarks_quick_run_prints_the_tables(tmp_path: Path) -> None:
    only = ["prancer-memory", "prancer-storable", "flask-session-cachelib-filesystem"]
    out = tmp_path / "results.json"
    result = run_module("benchmarks", "--quick", "--only", ",".join(only), "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("| contender | counter | read | untouched | anonymous |") == 3
    data = json.loads(out.read_text())
    ran = set(data["results"])
    assert {"flask-bare", "flask-cookie", "prancer-memory", "prancer-storable"} <= ran
    # Flask-Session is optional: it either ran or was skipped with a reason.
    assert ran | set(data["skipped"]) == {"flask-bare", "flask-cookie", *only}
    for name in ran:
        assert f"| {name} |" in result.stdout
    for views in data["results"].values():
        assert set(views) == set(contenders.VIEWS)
        assert all(len(view["rps"]) == 2 for view in views.values())
    assert data["results"]["flask-bare"]["counter"]["median_vs_bare"] == 1.0


def test_scale_tiny_run_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    result = run_module(
        "benchmarks.scale",
        "--max",
        "50",
        "--requests",
        "10",
        "--only",
        "memory,storable,sqlite",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "| store | sessions | counter req/s |" in result.stdout
    steps = json.loads(out.read_text())["steps"]
    assert [(step["store"], step["sessions"]) for step in steps] == [
        ("memory", 50),
        ("storable", 50),
        ("sqlite", 50),
    ]
    # A tenth of the sessions were expired, and purge deleted exactly those.
    assert all(step["purged"] == 5 for step in steps)


def test_roundtrips_quick_run_prints_the_table() -> None:
    result = run_module("benchmarks.roundtrips", "--quick")
    assert result.returncode == 0, result.stderr
    assert "| round trip | 0 µs | 150 µs | 300 µs |" in result.stdout
    # Every row either ran or says why not.
    for name, *_ in roundtrips.ROWS:
        assert f"| {name} |" in result.stdout or f"skipped {name}:" in result.stdout


def test_unknown_contender_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown contender nope"):
        contenders.select(["prancer-memory", "nope"])


def test_selection_always_includes_the_references() -> None:
    names = [contender.name for contender in contenders.select(["prancer-redis"])]
    assert names == ["flask-bare", "flask-cookie", "prancer-redis"]


def test_ratios_are_taken_per_round_and_reported_as_medians() -> None:
    results = Results(rounds=3, requests=1)
    results.rps = {
        "flask-bare": {"counter": [100.0, 200.0, 100.0]},
        "flask-cookie": {"counter": [50.0, 50.0, 50.0]},
    }
    ratios = results.ratios("flask-bare")
    assert ratios["flask-cookie"]["counter"] == [0.5, 0.25, 0.5]
    assert results.medians(ratios)["flask-cookie"]["counter"] == 0.5
