"""The manual keeps to the code: its examples run, its option tables match the
drivers' constructors, and no paragraph of it exists twice.

Every ``.. code-block:: python`` of ``docs/`` and every fenced ``python``
block of the README runs here. The blocks of one page run in order in one
namespace, as a reader follows the page, and each block starts with a fresh
Flask app as ``app`` (``SECRET_KEY`` set, its instance folder in a temporary
directory, which is also the working directory), so a block that only sets
``app.config["PRANCER_SESSION"]`` is then checked by ``PrancerSession(app)``.
``SESSION_KEY`` and ``OLD_SESSION_KEY`` hold encryption keys, and a ``yaml``
or ``toml`` block whose first line is ``# NAME`` is written to the file NAME
first. No example may reach a host other than this one.

A block that cannot run alone, because it needs a server the suite does not
have or a module of the reader's app, is marked by a comment just above it,
``.. fragment: why`` (``<!-- fragment: why -->`` in Markdown), and is only
compiled. :data:`FRAGMENTS` lists them, so the list stays short and explicit.
"""

from __future__ import annotations

import importlib
import inspect
import ipaddress
import re
import secrets
import socket
import textwrap
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask

from flask_prancer_session import PrancerSession
from flask_prancer_session.config import SECTIONS
from flask_prancer_session.registry import STATE_DRIVERS
from flask_prancer_session.registry import STORE_DRIVERS

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

if not DOCS.is_dir():  # an sdist ships the tests but not the manual
    pytest.skip("the manual (docs/) is not here", allow_module_level=True)

#: Every example that only compiles, by page, with the reason its comment gives.
FRAGMENTS = {
    "docs/drivers.rst": ["names a module of your own app"],
    "docs/stores/database.rst": ["needs a PostgreSQL server at db.internal and DB_PASSWORD"],
    "docs/stores/redis.rst": ["needs a Redis Cluster at redis-1.internal"],
    "docs/testing.rst": ["imports your app's create_app"],
}

#: Languages of blocks that may be files the examples read.
FILE_LANGUAGES = {"yaml", "toml"}


@dataclass
class Block:
    """A code block of a page."""

    page: Path
    #: The line of the page where the code starts.
    line: int
    language: str
    code: str
    #: Why the block cannot run alone, if it is a fragment.
    fragment: str | None

    def compiled(self) -> t.Any:
        # Padded so a traceback names the page's own line.
        return compile("\n" * (self.line - 1) + self.code, str(self.page), "exec")


_RST_BLOCK = re.compile(r"^(?P<indent> *)\.\. code-block:: *(?P<language>\S+) *$")
_RST_FRAGMENT = re.compile(r"^ *\.\. fragment: *(?P<why>\S.*)$")
_MD_BLOCK = re.compile(r"^```(?P<language>\w+) *$")
_MD_FRAGMENT = re.compile(r"^<!-- fragment: *(?P<why>.*?) *-->$")


def rst_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks = []
    for index, text in enumerate(lines):
        match = _RST_BLOCK.match(text)
        if match is None:
            continue
        indent = len(match["indent"])
        body = index + 1
        # The directive's options, then a blank line, then the indented code.
        while body < len(lines) and (
            not lines[body].strip() or lines[body].strip().startswith(":")
        ):
            body += 1
        end = body
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
        ):
            end += 1
        above = _RST_FRAGMENT.match(lines[index - 1]) if index else None
        blocks.append(
            Block(
                page,
                body + 1,
                match["language"],
                textwrap.dedent("\n".join(lines[body:end])).strip("\n") + "\n",
                above["why"] if above else None,
            )
        )
    return blocks


def markdown_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = _MD_BLOCK.match(lines[index])
        if match is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        above = _MD_FRAGMENT.match(lines[index - 1]) if index else None
        code = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(
            Block(page, index + 2, match["language"], code, above["why"] if above else None)
        )
        index = end + 1
    return blocks


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.rst"))]


def blocks_of(page: Path) -> list[Block]:
    return markdown_blocks(page) if page.suffix == ".md" else rst_blocks(page)


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


PAGES_WITH_PYTHON = [
    page for page in pages() if any(b.language == "python" for b in blocks_of(page))
]


def test_examples_are_found() -> None:
    found = {name(page) for page in PAGES_WITH_PYTHON}
    assert {"README.md", "docs/quickstart.rst", "docs/stores/redis.rst"} <= found
    quick_start = [b for b in blocks_of(DOCS / "quickstart.rst") if b.language == "python"]
    assert quick_start[0].code.startswith("from flask import Flask, redirect\n")
    assert quick_start[0].code.endswith('    return redirect("/")\n')


def test_fragments_are_the_listed_ones() -> None:
    fragments: dict[str, list[str]] = {}
    for page in pages():
        for block in blocks_of(page):
            if block.fragment is not None:
                assert block.language == "python", f"{name(page)}:{block.line}"
                fragments.setdefault(name(page), []).append(block.fragment)
    assert fragments == FRAGMENTS


def _loopback_only(real: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    """Wrap :func:`socket.getaddrinfo` so that examples can reach only this host."""

    def getaddrinfo(host: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        text = host.decode() if isinstance(host, bytes) else str(host)
        if text != "localhost":
            try:
                loopback = ipaddress.ip_address(text).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise OSError(f"the docs examples may not reach {text!r}")
        return real(host, *args, **kwargs)

    return getaddrinfo


def _fresh_app(directory: Path) -> Flask:
    app = Flask("docs_example", instance_path=str(directory / "instance"))
    app.config["SECRET_KEY"] = "docs-example-secret"
    app.testing = True
    return app


def _close(app: object) -> None:
    """Close what an example opened that would otherwise warn when collected."""
    if not isinstance(app, Flask):
        return
    engines = []
    interface = app.extensions.get("prancer_session")
    store = getattr(interface, "store", None)
    if getattr(store, "engine", None) is not None:
        engines.append(store.engine)
    database = app.extensions.get("sqlalchemy")
    if database is not None:
        with app.app_context():
            engines.extend(database.engines.values())
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=name)
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(socket, "getaddrinfo", _loopback_only(socket.getaddrinfo))
    monkeypatch.setenv("SESSION_KEY", secrets.token_urlsafe(32))
    monkeypatch.setenv("OLD_SESSION_KEY", secrets.token_urlsafe(32))
    blocks = blocks_of(page)
    for block in blocks:
        first = block.code.splitlines()[0] if block.code.strip() else ""
        file = re.fullmatch(r"# ([\w.-]+)", first)
        if block.language in FILE_LANGUAGES and file is not None:
            (tmp_path / file[1]).write_text(block.code)
    namespace: dict[str, t.Any] = {"__name__": "docs_example"}
    apps = []
    try:
        for block in blocks:
            if block.language != "python":
                continue
            code = block.compiled()
            if block.fragment is not None:
                continue
            namespace["app"] = _fresh_app(tmp_path)
            exec(code, namespace)
            app = namespace["app"]
            apps.append(app)
            if (
                isinstance(app, Flask)
                and "prancer_session" not in app.extensions
                and "PRANCER_SESSION" in app.config
            ):
                PrancerSession(app)  # the configuration the example wrote is valid
    finally:
        for app in apps:
            _close(app)


# The option tables.


@dataclass
class OptionTable:
    page: Path
    driver: str
    common: bool
    documented: set[str]


_DRIVER_OPTIONS = re.compile(r"^(?P<indent> *)\.\. driver-options:: *(?P<driver>\S+) *$")


def option_tables() -> list[OptionTable]:
    tables = []
    for page in sorted(DOCS.rglob("*.rst")):
        lines = page.read_text().splitlines()
        for index, text in enumerate(lines):
            match = _DRIVER_OPTIONS.match(text)
            if match is None:
                continue
            indent = len(match["indent"])
            end = index + 1
            while end < len(lines) and (
                not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
            ):
                end += 1
            body = lines[index + 1 : end]
            documented: set[str] = set()
            first_cell: list[str] = []
            for line in [*body, "* - "]:
                stripped = line.strip()
                if stripped.startswith("* - ") or stripped.startswith("- "):
                    documented |= set(re.findall(r"``([^`]+)``", " ".join(first_cell)))
                    first_cell = [stripped[4:]] if stripped.startswith("* - ") else []
                elif first_cell:
                    first_cell.append(stripped)
            tables.append(
                OptionTable(page, match["driver"], any(":common:" in b for b in body), documented)
            )
    return tables


def keywords(cls: type) -> tuple[set[str], bool]:
    parameters = inspect.signature(cls).parameters.values()
    named = {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def load(path: str) -> type:
    module, _, attribute = path.replace(":", ".").rpartition(".")
    cls: type = getattr(importlib.import_module(module), attribute)
    return cls


COMMON, _ = keywords(load("flask_prancer_session.store.base.StoreDriver"))


@pytest.mark.parametrize("table", option_tables(), ids=lambda table: table.driver)
def test_option_table_matches_the_constructor(table: OptionTable) -> None:
    accepted, open_ended = keywords(load(table.driver))
    common = COMMON if table.common else set()
    assert accepted - common - table.documented == set(), "options the table leaves out"
    if not open_ended:
        assert table.documented - accepted - common == set(), "options the driver does not take"


def test_every_shipped_driver_has_its_option_table() -> None:
    tables = {table.driver: table for table in option_tables()}
    for entry in STATE_DRIVERS.values():
        driver = entry.target.replace(":", ".")
        assert tables[driver].page == DOCS / "configuration.rst"
    for short, entry in STORE_DRIVERS.items():
        if "::" in short or short == "file":
            continue
        table = tables[entry.target.replace(":", ".")]
        assert table.page == DOCS / "stores" / f"{short}.rst"
        assert table.common


def test_every_configuration_key_is_documented() -> None:
    text = (DOCS / "configuration.rst").read_text()
    intro = text.split("\nNaming a driver\n", 1)[0]
    assert set(re.findall(r"^``(\w+)``$", intro, re.M)) == set(SECTIONS)


def test_every_shipped_store_is_in_the_capabilities_table() -> None:
    text = (DOCS / "stores" / "index.rst").read_text()
    listed = re.search(r"\.\. store-capabilities::\n\n((?:   \S+\n)+)", text)
    assert listed is not None
    shipped = {entry.target.replace(":", ".") for entry in STORE_DRIVERS.values()}
    assert set(listed[1].split()) == shipped


# The manual says each thing once.


def paragraphs(page: Path) -> list[str]:
    found = []
    for chunk in re.split(r"\n\s*\n", page.read_text()):
        text = " ".join(chunk.split())
        if len(text.split()) >= 12:
            found.append(text)
    return found


def test_no_paragraph_of_the_manual_exists_twice() -> None:
    seen: dict[str, str] = {}
    twice = []
    for page in sorted(DOCS.rglob("*.rst")):
        for text in paragraphs(page):
            if text in seen:
                twice.append(f"{seen[text]} and {name(page)}: {text[:80]}")
            seen.setdefault(text, name(page))
    assert twice == []


def test_every_page_is_in_the_contents() -> None:
    index = (DOCS / "index.rst").read_text()
    listed = set(re.findall(r"^   (\S+)$", index, re.M))
    on_disk = {page.relative_to(DOCS).with_suffix("").as_posix() for page in DOCS.rglob("*.rst")}
    assert on_disk - {"index"} == listed
