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
