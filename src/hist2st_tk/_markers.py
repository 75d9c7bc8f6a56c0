"""Marker genes of HER2-positive breast cancer sections: what the tumor signature reads
(:func:`hist2st_tk.tl.tumor_regions`) and what the default model's panel always holds."""

from __future__ import annotations

#: Markers of (breast) carcinoma cells: the HER2 amplicon (ERBB2, GRB7, STARD3, PGAP3), luminal
#: keratins (KRT7, KRT8, KRT18, KRT19), epithelial adhesion (EPCAM, CDH1, CLDN4) and mucin MUC1.
TUMOR_MARKERS: tuple[str, ...] = (
    "ERBB2", "GRB7", "STARD3", "PGAP3", "KRT7", "KRT8", "KRT18", "KRT19", "EPCAM", "CDH1", "CLDN4", "MUC1",
)  # fmt: skip
#: Markers of what surrounds a tumor: fibroblasts / extracellular matrix (COL1A1, COL1A2, COL3A1, DCN,
#: LUM), immune and plasma cells (PTPRC, IGKC, IGHG3, IGLC2; not CD74, which tumors express too) and
#: fat (ADIPOQ, PLIN1, FABP4).
NON_TUMOR_MARKERS: tuple[str, ...] = (
    "COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "PTPRC", "IGKC", "IGHG3", "IGLC2", "ADIPOQ", "PLIN1", "FABP4",
)  # fmt: skip
