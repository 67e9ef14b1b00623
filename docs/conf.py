"""Sphinx configuration for the flask-prancer-session manual.

Build it with ``sphinx-build -W --keep-going -b html docs docs/_build/html``
after ``pip install -e ".[docs]"``.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version as _version

# The local extension with the option-table checks.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

project = "flask-prancer-session"
author = "the flask-prancer-session maintainers"
copyright = "the flask-prancer-session maintainers"
release = _version("flask-prancer-session")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "prancer_docs",
]

exclude_patterns = ["_build"]
default_role = "code"

html_theme = "furo"
html_title = f"flask-prancer-session {release}"

# Signatures stay short and readable; the types go into the parameter lists.
# The modules use ``from __future__ import annotations`` with imports under
# ``TYPE_CHECKING`` (``Flask``, ``Request``, ``Response``), which cannot be
# resolved at run time: in "description" mode autodoc shows them as written
# instead of failing on them.
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
# A driver's own page shows what is its own: the contract methods it
# implements are documented once, on StoreDriver and StateDriver.
autodoc_inherit_docstrings = False

# Links to Flask, Werkzeug, itsdangerous, SQLAlchemy and cachelib objects in
# the docstrings stay plain text: intersphinx would fetch their inventories
# over the network at every build, which a build must not depend on. Keeping
# nitpicky off is what lets those references stand without a warning; every
# reference to this project's own objects still resolves.
nitpicky = False

# No warning is suppressed.
suppress_warnings: list[str] = []
