"""The benchmark entry points run and report; how fast anything is is not checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import contenders
from benchmarks import floors
from benchmarks import roundtrips
from benchmarks.runner import Results
from benchmarks.runner import Spread

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
    only = ["prancer-memory", "prancer-storable"]
    out = tmp_path / "results.json"
    result = run_module("benchmarks", "--quick", "--only", ",".join(only), "--json", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    ran = set(data["results"])
    # The floors and Flask-Session on the same backends come along.
    expected = {"flask-bare", "flask-cookie", *only, "floor-memory", "floor-files"}
    assert expected <= ran
    # Flask-Session is optional: it either ran or was skipped with a reason.
    assert ran | set(data["skipped"]) == expected | {"flask-session-cachelib-filesystem"}
    tables = 5 if "flask-session-cachelib-filesystem" in ran else 4
    assert result.stdout.count("| contender | counter | read | untouched | anonymous |") == tables
    for name in ran:
        assert f"| {name} |" in result.stdout
    assert "| prancer-memory / floor-memory |" in result.stdout
    assert "| prancer-storable / floor-files |" in result.stdout
    for views in data["results"].values():
        assert set(views) == set(contenders.VIEWS)
        assert all(len(view["rps"]) == 2 and view["requests"] >= 2 for view in views.values())
    bare = data["results"]["flask-bare"]["counter"]
    assert bare["median_vs_bare"] == 1.0
    assert bare["spread_vs_bare"] == {"median": 1.0, "q1": 1.0, "q3": 1.0, "min": 1.0, "max": 1.0}
    storable = data["results"]["prancer-storable"]["read"]
    floor = data["results"]["floor-files"]["read"]
    assert storable["vs_floor"] == [
        a / b for a, b in zip(storable["rps"], floor["rps"], strict=True)
    ]
    assert "vs_floor" not in floor
    assert data["floors"]["prancer-storable"] == "floor-files"


def test_benchmarks_quick_run_on_the_servers(tmp_path: Path) -> None:
    """Every network contender runs, or is skipped with the reason."""
    only = ["prancer-redis", "prancer-postgresql", "prancer-mariadb", "prancer-sqlite"]
    out = tmp_path / "results.json"
    result = run_module("benchmarks", "--quick", "--only", ",".join(only), "--json", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    expected = {c.name for c in contenders.select(only)}
    assert set(data["results"]) | set(data["skipped"]) == expected
    assert len(expected) == 2 + 3 * len(only)
    for name in data["results"]:
        assert f"| {name} |" in result.stdout
    for name in set(data["floors"]) & set(data["results"]):
        if data["floors"][name] in data["results"]:
            assert f"| {name} / {data['floors'][name]} |" in result.stdout


def test_load_comparison_tiny_run(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    result = run_module(
        "benchmarks.load",
        "--store",
        "none",
        "--compare",
        "prancer-storable,floor-files,flask-bare",
        "--workers",
        "1",
        "--clients",
        "2",
        "--duration",
        "0.4",
        "--rounds",
        "2",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| contender | req/s | p50 ms | p99 ms | vs floor | vs Flask-Session |" in result.stdout
    comparison = json.loads(out.read_text())["comparison"]
    assert list(comparison["contenders"]) == ["prancer-storable", "floor-files", "flask-bare"]
    storable = comparison["contenders"]["prancer-storable"]
    assert len(storable["throughput"]) == 2 and storable["requests"] > 0
    assert len(storable["vs_floor"]) == 2
    assert not storable["failures"] and not storable["lost_updates"]


def test_load_refuses_per_process_stores() -> None:
    result = run_module("benchmarks.load", "--store", "none", "--compare", "prancer-memory")
    assert result.returncode == 2
    assert "unknown contender prancer-memory" in result.stderr


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


def test_selection_adds_the_references_floor_and_flask_session() -> None:
    names = [contender.name for contender in contenders.select(["prancer-redis"])]
    assert names == [
        "flask-bare",
        "flask-cookie",
        "prancer-redis",
        "floor-redis",
        "flask-session-redis",
    ]


def test_every_store_has_a_floor_and_its_references_exist() -> None:
    for contender in contenders.CONTENDERS:
        if contender.name.startswith("prancer-"):
            assert contender.floor is not None
        for reference in contender.references:
            assert reference in contenders.BY_NAME


def test_ratios_are_taken_per_round_and_reported_as_medians() -> None:
    results = Results(rounds=3, seconds=1.0)
    results.rps = {
        "flask-bare": {"counter": [100.0, 200.0, 100.0]},
        "flask-cookie": {"counter": [50.0, 50.0, 50.0]},
        "floor": {"counter": [25.0, 100.0, 200.0]},
    }
    ratios = results.ratios("flask-bare")
    assert ratios["flask-cookie"]["counter"] == [0.5, 0.25, 0.5]
    assert results.medians(ratios)["flask-cookie"]["counter"] == 0.5
    # Pairs whose reference did not run are left out.
    paired = results.paired({"flask-cookie": "floor", "flask-bare": "absent"})
    assert paired == {"flask-cookie": {"counter": [2.0, 0.5, 0.25]}}


def test_spread_gives_the_median_and_quartiles_of_the_rounds() -> None:
    spread = Spread.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (spread.median, spread.q1, spread.q3, spread.low, spread.high) == (3, 2, 4, 1, 5)
    assert Spread.of([0.7]) == Spread(0.7, 0.7, 0.7, 0.7, 0.7)


@pytest.fixture(params=["memory", "files"])
def floor_backend(request: pytest.FixtureRequest, tmp_path: Path) -> floors.FloorBackend:
    if request.param == "memory":
        return floors.MemoryFloor()
    return floors.FileFloor(str(tmp_path / "floor"))


def test_floor_counts_and_reads_only_when_used(floor_backend: floors.FloorBackend) -> None:
    loaded: list[str] = []
    load = floor_backend.load

    def counting_load(session_id: str) -> str | bytes | None:
        loaded.append(session_id)
        return load(session_id)

    floor_backend.load = counting_load  # type: ignore[method-assign]
    app = contenders.make_app()
    floors.install(app, floor_backend)
    client = app.test_client()
    assert client.get("/read").text == "0"
    assert client.get_cookie(floors.COOKIE_NAME) is None  # nothing stored, no cookie
    assert [client.get("/counter").text for _ in range(3)] == ["1", "2", "3"]
    cookie = client.get_cookie(floors.COOKIE_NAME)
    assert cookie is not None and len(cookie.value) == 43
    assert client.get("/read").text == "3"
    del loaded[:]
    client.get("/untouched")
    assert loaded == []


@pytest.mark.parametrize("forged", ["x" * 43, "../../../../etc/passwd", "a/b"])
def test_floor_never_adopts_an_unknown_id(floor_backend: floors.FloorBackend, forged: str) -> None:
    app = contenders.make_app()
    floors.install(app, floor_backend)
    client = app.test_client()
    client.set_cookie(floors.COOKIE_NAME, forged)
    assert client.get("/counter").text == "1"
    cookie = client.get_cookie(floors.COOKIE_NAME)
    assert cookie is not None and cookie.value != forged
