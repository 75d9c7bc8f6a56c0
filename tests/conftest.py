"""Shared fixtures: where the real data lives, and cheap synthetic sections."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path | None:
    """``$HIST2ST_TK_DATA`` or ``../shared/data`` beside the repository, when present."""
    candidates = [os.environ.get("HIST2ST_TK_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("real data not found: set HIST2ST_TK_DATA to the folder holding her2st/ and visium_*/")
    return root


@pytest.fixture(scope="session")
def visium_root(data_root: Path) -> Path:
    return data_root


PITCH_PX = 40  # grid neighbours are 40 px apart: 200 um / 40 px = 5 um per pixel
GENES = ["ERBB2", "GNAS", "ACTB", "MT-CO1"]


def write_st_files(
    folder: Path, *, n: int = 5, image_mode: str = "RGB", shift_px: float = 0.0, seed: int = 0
) -> dict[str, Path]:
    """An n x n grid of spots, its counts (spots x genes) and a matching RGB JPEG."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(1, n + 1), np.arange(1, n + 1))
    x, y = x.ravel(), y.ravel()
    spots = pd.DataFrame(
        {
            "x": x,
            "y": y,
            "new_x": x + 0.01,
            "new_y": y - 0.01,
            "pixel_x": x * PITCH_PX + shift_px,
            "pixel_y": y * PITCH_PX,
            "selected": 1,
        }
    )
    counts = pd.DataFrame(
        rng.poisson(5, size=(len(spots), len(GENES))),
        index=[f"{a}x{b}" for a, b in zip(x, y, strict=True)],
        columns=GENES,
    )
    size = (n + 2) * PITCH_PX
    pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(image_mode)
    paths = {
        "counts": folder / "counts.tsv.gz",
        "spots": folder / "selection.tsv",
        "image": folder / ("he.jpg" if image_mode in ("RGB", "L") else "he.png"),
    }
    counts.to_csv(paths["counts"], sep="\t")
    spots.to_csv(paths["spots"], sep="\t", index=False)
    image.save(paths["image"])
    return paths


@pytest.fixture
def st_files(tmp_path: Path):
    """Factory writing tiny legacy-ST files into a fresh folder (see :func:`write_st_files`)."""
    counter = iter(range(1000))

    def make(**kwargs) -> dict[str, Path]:
        folder = tmp_path / f"st{next(counter)}"
        folder.mkdir()
        return write_st_files(folder, **kwargs)

    return make


@pytest.fixture(scope="session")
def her2st():
    """Loader of real HER2ST sections (cached for the session; tests must not modify them).

    Reads the shared data when present, else the user cache or a download; skips when offline.
    """
    import hist2st_tk as ht

    loaded = {}

    def load(section: str):
        if section not in loaded:
            root = real_data_root()
            data_dir = root / "her2st" if root is not None and (root / "her2st").is_dir() else None
            try:
                loaded[section] = ht.datasets.her2st(section, data_dir=data_dir)
            except OSError as err:
                pytest.skip(
                    f"HER2ST section {section} is not available locally and could not be downloaded: {err}"
                )
        return loaded[section]

    return load


def detached(sdata):
    """A SpatialData sharing ``sdata``'s images but with its own shapes, tables and attrs, to write into."""
    import copy

    from spatialdata import SpatialData

    return SpatialData(
        images=dict(sdata.images),
        shapes=dict(sdata.shapes),
        tables={key: table.copy() for key, table in sdata.tables.items()},
        attrs=copy.deepcopy(dict(sdata.attrs)),
    )


@pytest.fixture(scope="session")
def her2st_lite0(her2st):
    """The six HER2ST sections with ``obsm["X_lite0"]`` of 112 um patches (computed once per session)."""
    import hist2st_tk as ht
    from hist2st_tk.bench import HER2ST6

    sections = {}
    for name in HER2ST6:
        sdata = detached(her2st(name))
        ht.pp.image_features(sdata, encoder="lite0", patch_um=112, progress=False)
        sections[name] = sdata
    return sections


@pytest.fixture
def check_figure(tmp_path: Path):
    """Compare a figure with its stored PNG: ``check_figure(fig, "name")`` (see ``tests/_image_compare.py``).

    Resets matplotlib's style first, so that the figures of the test are drawn with the defaults.
    """
    import importlib.util

    import matplotlib

    matplotlib.rcdefaults()
    spec = importlib.util.spec_from_file_location("_image_compare", Path(__file__).with_name("_image_compare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def check(fig, name: str, **kwargs) -> None:
        module.check_figure(fig, name, tmp_path, **kwargs)

    return check


@pytest.fixture
def her2st_copy(her2st):
    """``her2st_copy("B4")``: a section to write into without changing the session's shared copy."""
    return lambda section: detached(her2st(section))


@pytest.fixture
def one_torch_thread():
    """Tiny models: one torch thread avoids OpenMP synchronisation stalls on a shared, busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_synthetic_slide(path: Path, seed: int) -> Path:
    """A pyramidal TIFF (2 levels, 0.5 um/px) of the H&E of a 16-spot synthetic section: 4 x 4 tiles of 100 um."""
    import hist2st_tk as ht
    from hist2st_tk._sdata import image_levels
    from hist2st_tk.bench._wsi import write_slide

    sdata = ht.datasets.synthetic(n_spots=16, n_genes=4, mpp=0.5, seed=seed)
    rgb = np.asarray(image_levels(sdata.images["synthetic_he"])[0].values).transpose(1, 2, 0)
    return write_slide(path, rgb, mpp=0.5, compression="zlib", n_levels=2)


@pytest.fixture(scope="session")
def fft_model():
    """A ridge model on FFT band features of 100 um patches (fast), trained on a synthetic section."""
    import hist2st_tk as ht

    train = ht.datasets.synthetic(n_spots=16, n_genes=8, mpp=0.5, seed=0)
    ht.pp.image_features(train, encoder="fft", patch_um=100.0, progress=False)  # the sections' spot pitch
    return ht.tl.fit_predictor(train, method="ridge", genes=5, use_rep="X_fft")


@pytest.fixture(scope="session")
def write_synthetic_slide():
    """``write_synthetic_slide(path, seed)``: a slide file of a synthetic section (4 x 4 tiles of 100 um)."""
    return _write_synthetic_slide
