"""Sphinx configuration of the hist2st_tk documentation.

Build with ``sphinx-build -M html docs docs/_build -W`` (warnings are errors).
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from importlib.metadata import metadata

# sphinx_autodoc_typehints 3.6 calls a Sphinx API deprecated in Sphinx 9: a Python warning printed to stderr,
# not a Sphinx build warning, silenced here so that real problems stand out.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"sphinx_autodoc_typehints")

# -- Project -------------------------------------------------------------------------------------

_info = metadata("hist2st-tk")
project = "hist2st_tk"
author = _info["Author"] or "hist2st_tk developers"
copyright = f"{datetime.now(tz=UTC):%Y}, {author}"  # noqa: A001 - Sphinx's name
version = _info["Version"]
release = version

# -- General -------------------------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # must come before sphinx_autodoc_typehints
    "sphinx_autodoc_typehints",
    # sphinx.ext.intersphinx (python, numpy, pandas, anndata, scanpy, spatialdata) is left out on purpose:
    # the build machines are offline, and a failed inventory fetch is a warning, which -W turns into an error.
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
master_doc = "index"
default_role = "literal"

# Markdown (MyST)
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

# API reference: one page per function, generated into docs/generated (git-ignored)
autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"  # type hints are rendered by sphinx_autodoc_typehints
add_module_names = False

# numpy-style docstrings only
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
# "Returns" is free text, as in scanpy ("A SpatialData with ..." followed by a list of the keys written),
# not numpy's "name : type" fields, which would split every line of such a list at its first colon.
napoleon_custom_sections = ["Returns"]

# sphinx_autodoc_typehints
typehints_defaults = "braces"
typehints_document_rtype = True
always_use_bars_union = True

# -- HTML ----------------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = "hist2st_tk"
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": "https://github.com/hist2st-tk/hist2st_tk",
    "use_repository_button": True,
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
}
html_show_sphinx = False
