"""Directives that keep the manual's option tables honest.

The option tables are written by hand, because a good table says more than a
signature can. These directives read the drivers' signatures at build time and
warn (an error under ``sphinx-build -W``) when a table and the code disagree,
and they render what can be read from the code directly: each store's defaults
for the common options, and which optional operations each store implements.
"""

from __future__ import annotations

import importlib
import inspect
import typing as t

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

if t.TYPE_CHECKING:
    from sphinx.application import Sphinx

logger = logging.getLogger(__name__)

_BASE = "flask_prancer_session.store.base.StoreDriver"


def _import(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def _keywords(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """Return the options ``cls`` accepts by name, and whether it also takes
    any other keyword (``**options``)."""
    parameters = inspect.signature(cls).parameters.values()
    named = {
        p.name: p
        for p in parameters
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _parse(directive: SphinxDirective, text: str) -> list[nodes.Node]:
    container = nodes.container()
    directive.state.nested_parse(
        StringList(text.splitlines(), directive.get_source_info()[0]),
        directive.content_offset,
        container,
    )
    return list(container.children)


class DriverOptions(SphinxDirective):
    """A table of a driver's options, checked against its constructor.

    .. code-block:: rst

        .. driver-options:: flask_prancer_session.store.memory.MemoryStore
           :common:

           .. list-table:: ...

    Every literal in the first column of the table names an option. A name
    the driver does not accept is a warning, unless the driver takes any
    keyword (``**options``) and passes it on; an option the driver accepts
    that the table leaves out is a warning too. With ``:common:`` the options
    of :class:`StoreDriver` are left to a sentence rendered below the table,
    which gives this store's defaults for them and names those it does not take.
    """

    required_arguments = 1
    has_content = True
    option_spec: t.ClassVar[dict[str, t.Callable[[str], t.Any]]] = {"common": directives.flag}

    def run(self) -> list[nodes.Node]:
        path = self.arguments[0]
        cls = _import(path)
        content = nodes.container()
        self.state.nested_parse(self.content, self.content_offset, content)
        documented: set[str] = set()
        for tbody in content.findall(nodes.tbody):
            for row in tbody.children:
                documented |= {
                    literal.astext() for literal in row.children[0].findall(nodes.literal)
                }

        accepted, open_ended = _keywords(cls)
        common: dict[str, inspect.Parameter] = {}
        if "common" in self.options:
            common, _ = _keywords(_import(_BASE))
        location = self.get_location()
        if not open_ended:
            for name in sorted(documented - accepted.keys() - common.keys()):
                logger.warning(
                    "the table documents %r, which %s does not accept",
                    name,
                    cls.__name__,
                    location=location,
                    type="prancer",
                    subtype="options",
                )
        for name in sorted(accepted.keys() - common.keys() - documented):
            logger.warning(
                "%s accepts %r, which the table does not document",
                cls.__name__,
                name,
                location=location,
                type="prancer",
                subtype="options",
            )

        result = list(content.children)
        if common:
            taken = [
                f"``{name}={accepted[name].default!r}``" for name in common if name in accepted
            ]
            missing = [f"``{name}``" for name in common if name not in accepted]
            text = (
                f"``{cls.__name__}`` also takes the :ref:`common store options"
                f" <common-store-options>`, with these defaults: {', '.join(taken)}."
            )
            if missing:
                text += f" It does not take {' or '.join(missing)}."
            result += _parse(self, text)
        return result


def _overrides(cls: type, base: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(base, name)


class StoreCapabilities(SphinxDirective):
    """A table of which optional operations each listed store implements,
    read from the classes, so it is right for the version being documented.

    .. code-block:: rst

        .. store-capabilities::

           flask_prancer_session.store.memory.MemoryStore
    """

    has_content = True

    def run(self) -> list[nodes.Node]:
        base = _import(_BASE)
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "",
            "   * - store",
            "     - expired sessions (``purge``)",
            "     - lists its sessions (``scan``)",
            "     - indexes sessions by user",
        ]
        for path in self.content:
            if not path.strip():
                continue
            cls = _import(path.strip())
            if cls.expires_natively:
                purge = "deleted by the backend itself"
            elif _overrides(cls, base, "purge"):
                purge = "deleted by ``purge``"
            else:
                purge = "never deleted: no ``purge``"
            lines += [
                f"   * - :class:`~{path.strip()}`",
                f"     - {purge}",
                f"     - {'yes' if _overrides(cls, base, 'scan') else 'no'}",
                f"     - {'yes' if cls.indexes_users else 'no'}",
            ]
        return _parse(self, "\n".join(lines))


def setup(app: Sphinx) -> dict[str, t.Any]:
    app.add_directive("driver-options", DriverOptions)
    app.add_directive("store-capabilities", StoreCapabilities)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
