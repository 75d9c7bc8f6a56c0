"""hist2st_tk: predict spatial gene expression from H&E histology, the scverse way.

``import hist2st_tk as ht`` gives ``ht.io`` (readers), ``ht.datasets`` (real and synthetic data),
``ht.pp`` (preprocessing and image features), ``ht.tl`` (predictors and tools), ``ht.pl`` (plots),
``ht.encoders`` (the image encoder registry) and ``ht.models`` (the predictor classes).
Importing the package is light: torch, spatialdata and scanpy load only when a function needs them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import datasets, encoders, io, models, pl, pp, tl

try:
    __version__ = version("hist2st-tk")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["datasets", "encoders", "io", "models", "pl", "pp", "tl"]
