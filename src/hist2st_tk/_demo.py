"""The main job, end to end on real data: what ``make demo`` and ``hist2st demo`` run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ._constants import TABLE_KEY
from ._logging import logger
from .datasets import HER2ST_SECTIONS, her2st
from .io import get_mpp, write_zarr
from .pl import spatial

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Genes and labels drawn on each section's overview.
OVERVIEW_KEYS = ("ERBB2", "region_label")


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    sections: Sequence[str] = HER2ST_SECTIONS,
    data_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Load HER2ST sections, write each as ``.zarr`` and an overview figure, and summarise them.

    Parameters
    ----------
    out_dir
        Folder for ``{section}.zarr``, ``{section}_overview.png`` and ``summary.md`` / ``summary.csv``.
    sections
        HER2ST sections to process.
    data_dir
        Where the HER2ST files are (see :func:`hist2st_tk.datasets.her2st`).

    Returns
    -------
    One row per section: patient, spots, genes, microns per pixel and its source, tumor spots.
    """
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for section in sections:
        sdata = her2st(section, data_dir=data_dir)
        table = sdata.tables[TABLE_KEY]
        write_zarr(sdata, out_dir / f"{section}.zarr", overwrite=True)
        figure = spatial(
            sdata, list(OVERVIEW_KEYS), title=f"HER2ST {section}", save=out_dir / f"{section}_overview.png"
        )
        plt.close(figure)
        mpp, source = get_mpp(sdata)
        rows.append(
            {
                "section": section,
                "patient": section[0],
                "spots": table.n_obs,
                "genes": table.n_vars,
                "mpp": round(mpp, 4),
                "mpp_source": source,
                "tumor_spots": int(table.obs["tumor"].sum()),
                "labelled_spots": int(table.obs["tumor"].notna().sum()),
            }
        )
    summary = pd.DataFrame(rows)
    summary.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(_summary_markdown(summary))
    logger.info("demo outputs in %s", out_dir.resolve())
    return summary


def _summary_markdown(summary: pd.DataFrame) -> str:
    header = "| " + " | ".join(summary.columns) + " |"
    rule = "|" + "---|" * len(summary.columns)
    lines = ["| " + " | ".join(str(v) for v in row) + " |" for row in summary.itertuples(index=False)]
    intro = (
        "# hist2st_tk demo: HER2ST sections\n\n"
        "Data: Andersson et al., Nat Commun 12, 6012 (2021). Region labels are the data authors' "
        "expression clusters. Overviews: `{section}_overview.png`; SpatialData stores: `{section}.zarr`.\n\n"
    )
    return intro + "\n".join([header, rule, *lines]) + "\n"
