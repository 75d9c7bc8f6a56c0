"""Target gene panel chosen on the training sections only, and marked in every section's table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .._constants import GENES_KEY, SAMPLE_KEY, TABLE_KEY
from .._docs import doc_params
from .._logging import format_ids, log_added
from .._sdata import sample_names, section_list
from .._section import check_section
from .._validate import check_count

if TYPE_CHECKING:
    import anndata as ad
    from spatialdata import SpatialData

GeneFlavor = Literal["top_mean", "top_var", "list"]
GENE_FLAVORS: tuple[str, ...] = ("top_mean", "top_var", "list")


@doc_params
def select_genes(
    sdatas: SpatialData | Sequence[SpatialData],
    *,
    n_genes: int = 250,
    flavor: GeneFlavor = "top_mean",
    genes: Sequence[str] | None = None,
    table_key: str = TABLE_KEY,
    layer: str | None = None,
    key_added: str = GENES_KEY,
    apply_to: SpatialData | Sequence[SpatialData] | None = None,
) -> pd.Index:
    """Choose the panel of target genes on the training sections and mark it in every section.

    The panel is computed on the sections passed as ``sdatas`` only (the training sections), never on
    ``apply_to`` (for example the held-out section), so that the choice of genes leaks nothing from
    the sections a model is evaluated on (docs/protocols.md). Only genes present in every training section
    are eligible. Statistics are taken over all spots of the training sections pooled.

    Parameters
    ----------
    sdatas
        The training section, or a sequence of them.
    n_genes
        Number of genes in the panel for ``"top_mean"`` and ``"top_var"``; not used by ``"list"``.
    flavor
        ``"top_mean"``: the ``n_genes`` genes of highest mean expression (the ``top250mean`` gene set
        of the ``her2st6-loso`` protocol with ``n_genes=250``).
        ``"top_var"``: the ``n_genes`` genes of highest variance (``top50var`` with ``n_genes=50``).
        ``"list"``: exactly ``genes``, in the given order.
        Ties are broken by gene name, so the panel is deterministic.
    genes
        The panel for ``flavor="list"``; required by, and only allowed with, that flavor.
    {table_key}
    layer
        Layer of the table to take expression from; by default ``X`` (log-normalised expression).
        Must exist in every training section.
    key_added
        Name of the ``var`` column and ``uns`` entry written.
    apply_to
        Further sections (a section or a sequence of them) to mark with the panel; they do not take
        part in its choice and must hold every panel gene.

    Returns
    -------
    The panel, a :class:`pandas.Index` of gene names, in ranked order (highest statistic first; for
    ``"list"``, the given order). Writes into the table of every section of ``sdatas`` and ``apply_to``:

    - ``var[key_added]``: bool, True for the genes of the panel;
    - ``uns[key_added]``: ``{"params": {"flavor", "n_genes", "layer", "trained_on"}}``, where
      ``trained_on`` lists the ``obs["sample"]`` names of the training sections.

    Nothing is written when the call fails: every section is checked before any is written.

    Examples
    --------
    >>> import hist2st_tk as ht
    >>> train = [ht.datasets.synthetic(n_spots=36, n_genes=12, seed=s, sample=f"s{s}") for s in (0, 1)]
    >>> test = ht.datasets.synthetic(n_spots=36, n_genes=12, seed=2, sample="held_out")
    >>> panel = ht.pp.select_genes(train, n_genes=5, apply_to=test)
    >>> int(test["table"].var["hist2st_genes"].sum())
    5
    """
    train = section_list(sdatas, "sdatas")
    others = [] if apply_to is None else section_list(apply_to, "apply_to")
    train_tables = [check_section(sdata, table_key) for sdata in train]
    other_tables = [check_section(sdata, table_key) for sdata in others]
    panel = gene_panel(
        train_tables, n_genes=n_genes, flavor=flavor, genes=genes, table_key=table_key, layer=layer
    )
    trained_on = _sample_names(train_tables)
    for i, table in enumerate(other_tables):
        missing = panel.difference(table.var_names, sort=False)
        if len(missing):
            msg = (
                f"Section {_section_name(table, i, 'apply_to')!r} of `apply_to` lacks {len(missing)} of the "
                f"{len(panel)} panel genes: {format_ids(missing)}."
            )
            raise KeyError(msg)

    params = {
        "flavor": flavor,
        "n_genes": len(panel),
        "layer": layer,
        "trained_on": trained_on,
    }
    tables = _unique(train_tables + other_tables)
    for table in tables:
        table.var[key_added] = table.var_names.isin(panel)
        table.uns[key_added] = {"params": dict(params, trained_on=list(trained_on))}
        name = _section_name(table, None, "")
        log_added(f"table.var[{key_added!r}] of section {name!r}: {len(panel)} of {table.n_vars} genes True")
        log_added(f"table.uns[{key_added!r}] of section {name!r}")
    return pd.Index(panel, dtype=object)


def gene_panel(
    train_tables: Sequence[ad.AnnData],
    *,
    n_genes: int = 250,
    flavor: GeneFlavor = "top_mean",
    genes: Sequence[str] | None = None,
    table_key: str = TABLE_KEY,
    layer: str | None = None,
) -> pd.Index:
    """The panel of :func:`select_genes`, computed on the training tables without writing anything."""
    if not train_tables:
        msg = "`sdatas` is empty; pass at least one training section."
        raise ValueError(msg)
    if flavor not in GENE_FLAVORS:
        msg = f"Unknown flavor {flavor!r}; use one of {list(GENE_FLAVORS)}."
        raise ValueError(msg)
    if flavor == "list":
        wanted = _check_gene_list(genes)
    else:
        if genes is not None:
            msg = (
                f"`genes` is only used by `flavor='list'`; got flavor={flavor!r}. Drop `genes` or use 'list'."
            )
            raise ValueError(msg)
        n_genes = check_count(n_genes, "n_genes")
    for i, table in enumerate(train_tables):
        _check_unique_genes(table, _section_name(table, i, "sdatas"))
    if layer is not None:
        for i, table in enumerate(train_tables):
            if layer not in table.layers:
                msg = (
                    f"No layer {layer!r} in table {table_key!r} of section "
                    f"{_section_name(table, i, 'sdatas')!r}; layers: {list(table.layers)}."
                )
                raise KeyError(msg)

    eligible = _shared_genes(train_tables)
    if flavor == "list":
        missing = wanted.difference(eligible, sort=False)
        if len(missing):
            msg = (
                f"{len(missing)} of the {len(wanted)} genes are not in every training section: "
                f"{format_ids(missing)}."
            )
            raise KeyError(msg)
        return pd.Index(wanted, dtype=object)
    if len(eligible) < n_genes:
        msg = (
            f"Only {len(eligible)} genes are present in every training section, fewer than "
            f"`n_genes={n_genes}`. Ask for fewer genes."
        )
        raise ValueError(msg)
    values = _pooled_statistic(train_tables, eligible, layer=layer, flavor=flavor)
    order = np.lexsort((eligible.to_numpy(dtype=str), -values))
    return pd.Index(eligible[order[:n_genes]], dtype=object)


def _check_gene_list(genes) -> pd.Index:
    if genes is None:
        msg = "`flavor='list'` needs `genes`, the names of the panel genes."
        raise ValueError(msg)
    if isinstance(genes, (str, bytes)):
        msg = f"`genes` must be a sequence of gene names, not one string {genes!r}; use [{genes!r}]."
        raise TypeError(msg)
    wanted = pd.Index([str(g) for g in genes], dtype=object)
    if len(wanted) == 0:
        msg = "`genes` is empty; pass at least one gene name."
        raise ValueError(msg)
    duplicated = wanted[wanted.duplicated()].unique()
    if len(duplicated):
        msg = f"`genes` names some genes more than once: {format_ids(duplicated)}."
        raise ValueError(msg)
    return wanted


def _section_name(table: ad.AnnData, i: int | None, what: str) -> str:
    names = sample_names(table) if table.n_obs else []
    if names:
        return ", ".join(names)
    return f"{what}[{i}]" if i is not None else "?"


def _sample_names(tables: list[ad.AnnData]) -> list[str]:
    names: list[str] = []
    for i, table in enumerate(tables):
        if SAMPLE_KEY not in table.obs.columns:
            msg = (
                f"The table of training section sdatas[{i}] has no obs['sample'] column naming the section; "
                f"obs columns: {list(table.obs.columns)}."
            )
            raise KeyError(msg)
        names.extend(n for n in sample_names(table) if n not in names)
    return names


def _check_unique_genes(table: ad.AnnData, name: str) -> None:
    duplicated = table.var_names[table.var_names.duplicated()].unique()
    if len(duplicated):
        msg = (
            f"Section {name!r} has duplicated gene names: {format_ids(duplicated)}. "
            "Make them unique first (`table.var_names_make_unique()`)."
        )
        raise ValueError(msg)


def _shared_genes(tables: list[ad.AnnData]) -> pd.Index:
    shared = pd.Index(tables[0].var_names, dtype=object)
    for table in tables[1:]:
        shared = shared.intersection(table.var_names, sort=False)
    return shared


def _unique(tables: list[ad.AnnData]) -> list[ad.AnnData]:
    seen: set[int] = set()
    kept = []
    for table in tables:
        if id(table) not in seen:
            seen.add(id(table))
            kept.append(table)
    return kept


def _pooled_statistic(
    tables: list[ad.AnnData], genes: pd.Index, *, layer: str | None, flavor: str
) -> np.ndarray:
    """Mean or (population) variance of each gene over the spots of all ``tables`` pooled, float64."""
    from scipy import sparse

    total = np.zeros(len(genes))
    total_sq = np.zeros(len(genes))
    n = 0
    for table in tables:
        x = table.layers[layer] if layer is not None else table.X
        x = x[:, table.var_names.get_indexer(genes)]
        if sparse.issparse(x):
            x = sparse.csr_matrix(x, dtype=np.float64)
            total += np.asarray(x.sum(axis=0)).ravel()
            if flavor == "top_var":
                total_sq += np.asarray(x.multiply(x).sum(axis=0)).ravel()
        else:
            x = np.asarray(x, dtype=np.float64)
            total += x.sum(axis=0)
            if flavor == "top_var":
                total_sq += np.square(x).sum(axis=0)
        n += table.n_obs
    if n == 0:
        msg = "The training sections have no spots."
        raise ValueError(msg)
    mean = total / n
    if flavor == "top_mean":
        return mean
    return np.maximum(total_sq / n - mean**2, 0.0)
