"""The README is a front page that works: its quick start runs as a newcomer
would copy it, its commands are the ones CI runs, and its links lead
somewhere. (``tests/test_docs.py`` runs its code blocks with the manual's.)"""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest
from flask import Flask

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


def quick_start_code() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def run_quick_start() -> Flask:
    namespace: dict[str, t.Any] = {"__name__": "readme_quick_start"}
    exec(compile(quick_start_code(), str(README), "exec"), namespace)
    app: Flask = namespace["app"]
    return app


def test_the_quick_start_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = run_quick_start()
    client = app.test_client()
    assert [client.get("/").text for _ in range(3)] == ["count 1", "count 2", "count 3"]
    sessions = tmp_path / "instance" / "sessions"
    assert sessions.is_dir()
    assert sessions.stat().st_mode & 0o777 == 0o700
    response = client.post("/logout")
    assert response.status_code == 302
    assert client.get_cookie("PSESSION") is None
    assert client.get(response.location).text == "count 1"


def test_the_quick_start_links_only_to_its_own_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = run_quick_start()
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    targets = re.findall(r"""redirect\(["']([^"']+)["']\)""", quick_start_code())
    assert targets
    assert set(targets) <= routes


def test_the_readme_is_a_front_page() -> None:
    assert len(README.read_text().splitlines()) <= 150


def test_the_commands_are_the_ones_ci_runs() -> None:
    text = README.read_text()
    assert 'python -m pip install ".[test]" && python -m pytest\n' in text
    assert 'python -m pip install ".[docs]" && sphinx-build -W docs docs/_build/html\n' in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'python -m pip install ".[test]" && python -m pytest' in ci
    assert "sphinx-build -W" in ci


def test_the_links_lead_somewhere() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local
    assert [link for link in local if not (ROOT / link).exists()] == []
