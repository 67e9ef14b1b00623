"""The README's quick start runs as a newcomer would copy it."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest
from flask import Flask

README = Path(__file__).parent.parent / "README.md"


def quick_start_code() -> str:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_quick_start_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, t.Any] = {"__name__": "readme_quick_start"}
    exec(compile(quick_start_code(), str(README), "exec"), namespace)
    app: Flask = namespace["app"]
    client = app.test_client()
    assert [client.get("/").text for _ in range(3)] == ["count 1", "count 2", "count 3"]
    sessions = tmp_path / "instance" / "sessions"
    assert sessions.is_dir()
    assert sessions.stat().st_mode & 0o777 == 0o700
    response = client.post("/logout")
    assert response.status_code == 302
    assert client.get_cookie("PSESSION") is None
    assert client.get("/").text == "count 1"
