from __future__ import annotations

import subprocess
import sys

import hist2st_tk as ht


def test_namespaces():
    for name in ("io", "datasets", "pp", "tl", "pl"):
        assert hasattr(ht, name)
    assert ht.__version__


def test_import_is_light():
    """`import hist2st_tk` must not pull in torch (nor the heavy scverse stack)."""
    code = "import sys, hist2st_tk; print(sorted(m for m in ('torch', 'spatialdata', 'scanpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shared_parameter_texts_are_filled_in_every_public_docstring():
    import inspect

    import hist2st_tk as ht
    from hist2st_tk._docs import DOCS, fill

    assert fill("f.\n\n    {table_key}\n") == "f.\n\n    table_key\n        Name of the table of spots (``sdata.tables[table_key]``).\n"
    assert fill("    {unknown}") == "    {unknown}"  # only the shared entries are placeholders
    placeholders = {f"{{{name}}}" for name in DOCS}
    left = []
    for namespace in (ht.io, ht.pp, ht.tl, ht.pl, ht.models):
        for name in namespace.__all__:
            obj = getattr(namespace, name)
            for member in [obj, *(m for _, m in inspect.getmembers(obj, inspect.isfunction))] if inspect.isclass(obj) else [obj]:
                lines = {line.strip() for line in (getattr(member, "__doc__", None) or "").splitlines()}
                if lines & placeholders:
                    left.append(f"{namespace.__name__}.{name}")
    assert not left, left
    assert "Name of the table of spots" in ht.tl.evaluate.__doc__ and "Name of the table of spots" in ht.models.Predictor.fit.__doc__
