"""Parameter texts that many docstrings share, written once (as scanpy's ``_docs``).

A docstring names a shared entry by a line holding only its placeholder, e.g. ``{table_key}``, at the
indentation of a parameter; :func:`doc_params` replaces it with the entry, indented to match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: The shared entries: the first line is the parameter's name, the others its description.
DOCS: dict[str, str] = {
    "table_key": """table_key
    Name of the table of spots (``sdata.tables[table_key]``).""",
    "image_key": """image_key
    The H&E image; may be omitted when the SpatialData has exactly one image.""",
    "progress": """progress
    Show a progress bar.""",
    "predictions_key_added": """key_added
    Name of the predictions; by default ``"predicted_{method}"``.""",
    "panel_size": """panel_size
    Size of one panel in inches.""",
    "max_image_px": """max_image_px
    The coarsest pyramid level whose longest side is at least this many pixels is drawn.""",
    "spot_alpha": """spot_alpha
    Opacity of the spots.""",
    "copy": """copy
    Return a new SpatialData holding a modified copy of the table (the other elements are shared
    with ``sdata``, not copied) and leave ``sdata`` unchanged.""",
    "save_show": """save
    Write the figure to this path (format from the suffix, PNG without one).
show
    Show the figure; ``None``: unless matplotlib's backend cannot (e.g. ``Agg``).""",
    "scale_bar": """scale_bar
    A scale bar on every image panel: ``True`` picks a round length (about a fifth of the panel's
    width) when the image's microns per pixel are known (:func:`~hist2st_tk.io.set_mpp`; none is
    drawn, and this is logged, when they are not); a number draws a bar of that many µm (which
    needs them); ``False`` draws none.""",
}


def doc_params(function: F) -> F:
    """Fill the shared entries (:data:`DOCS`) into ``function``'s docstring, in place of their placeholders."""
    if function.__doc__:  # None under python -OO
        function.__doc__ = fill(function.__doc__)
    return function


def fill(docstring: str) -> str:
    """``docstring`` with each line ``{name}`` of :data:`DOCS` replaced by its entry, at that line's indent."""
    lines = []
    for line in docstring.splitlines():
        name = line.strip()
        if name.startswith("{") and name.endswith("}") and name[1:-1] in DOCS:
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + text for text in DOCS[name[1:-1]].splitlines())
        else:
            lines.append(line)
    return "\n".join(lines) + ("\n" if docstring.endswith("\n") else "")
