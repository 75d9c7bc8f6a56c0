"""One life cycle for every predictor: fit on sections, predict a DataFrame, save to and load from a directory.

A predictor reads per-spot image features (``obsm`` keys written by ``ht.pp``) and predicts the
log-normalised expression (``X``) of a panel of genes. Subclasses implement four hooks on plain arrays
and tensors; this base class does everything that touches SpatialData, files and checks, so that a
method is a small class around a ``torch.nn.Module`` (or a scikit-learn estimator).

This module holds the registry of methods and :class:`Predictor`. A saved model is one directory
(``model.json`` + ``weights.safetensors``) whose format and checks are in
:mod:`hist2st_tk.models._model_dir`; :meth:`Predictor.load` also checks the shape of every tensor
against the recorded genes and input widths. The checks of a section's expression and features against
a model are in :mod:`hist2st_tk.models._inputs`.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from .._constants import TABLE_KEY
from .._docs import doc_params
from .._files import package_version, write_model_dir
from .._logging import format_ids, logger
from .._sdata import get_table, section_name
from ._inputs import check_learnable, compare_records, expression, feature_params, feature_record, section_mpp
from ._model_dir import CONFIG_FILE, FORMAT, FORMAT_VERSION, from_config, read_model_dir
from ._novelty import PREFIX as NOVELTY_PREFIX
from ._novelty import FeatureNovelty
from ._schema import nonfinite_tensor

if TYPE_CHECKING:
    import torch
    from spatialdata import SpatialData


_METHODS: dict[str, type[Predictor]] = {}


def register_method(cls: type[Predictor]) -> type[Predictor]:
    """Class decorator: make a predictor class available by its ``method`` name."""
    _METHODS[cls.method] = cls
    return cls


def available_methods() -> list[str]:
    """Names of the predictor methods."""
    return sorted(_METHODS)


def method_class(method: str) -> type[Predictor]:
    """The predictor class of ``method``, or an error listing the methods."""
    if method not in _METHODS:
        msg = f"Unknown method {method!r}; available methods: {available_methods()}."
        raise ValueError(msg)
    return _METHODS[method]


class Predictor(ABC):
    """Base of every predictor.

    Parameters
    ----------
    use_rep
        ``obsm`` key(s) of the image features the model reads, e.g. ``"X_lite0"``; several keys are
        concatenated (multi-scale features).
    seed
        Seed of every random choice of the fit.
    center
        Subtract from each section's features their mean over the section's own spots, at fit and at
        prediction alike. This removes shifts shared by a whole section (stain, scanner, thickness)
        that do not tell one spot from another; it uses the H&E of the section predicted, never its
        expression. Per-gene Pearson is unaffected by what it removes; absolute levels then follow
        the training sections.
    **hparams
        Hyper-parameters of the method (see its class).
    """

    method: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    #: The ``model.json`` spec (see :mod:`~hist2st_tk.models._schema`) of the hyper-parameters whose
    #: default does not tell their type (``None``, or ``"auto"`` that also takes a bool or an int).
    hparam_specs: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(
        self, *, use_rep: str | Sequence[str] = "X_lite0", seed: int = 0, center: bool = False, **hparams: Any
    ):
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            msg = (
                f"Unknown hyper-parameters for method {self.method!r}: {unknown}; "
                f"it takes {sorted(self.defaults)} (plus use_rep, seed, center)."
            )
            raise TypeError(msg)
        self.use_rep = [use_rep] if isinstance(use_rep, str) else list(use_rep)
        self.seed = int(seed)
        self.center = bool(center)
        self.hparams = {**self.defaults, **hparams}
        self.genes: pd.Index | None = None
        self.inputs: dict[str, dict] = {}
        self.trained_on: list[str] = []
        self.history: dict[str, list[float]] = {}
        self.novelty: FeatureNovelty | None = None
        self.training_mpp: list[float | None] = []
        #: ``(lowest, highest)`` microns per pixel the model is meant for; see :meth:`mpp_range`.
        self.validated_mpp: tuple[float, float] | None = None

    # -- hooks of a method ------------------------------------------------------------------------
    @abstractmethod
    def _fit(
        self,
        features: list[np.ndarray],
        targets: list[np.ndarray],
        sections: list[str],
        obs: list[pd.DataFrame],
    ) -> None:
        """Fit on per-section features (spots x d), targets (spots x genes) and spot annotations (``obs``)."""

    @abstractmethod
    def _predict(self, features: np.ndarray) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
        """Predicted expression (spots x genes) of one section's features, optionally with per-spot
        annotations (e.g. ``{"tumor_score": ...}``) that :func:`~hist2st_tk.tl.predict_expression` writes to ``obs``."""

    @abstractmethod
    def _tensors(self) -> dict[str, torch.Tensor]:
        """Every learnt value as named tensors, for saving."""

    @abstractmethod
    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the learnt values saved by :meth:`_tensors`."""

    # -- life cycle -------------------------------------------------------------------------------
    @property
    def n_parameters(self) -> int:
        """Number of learnt values (0 before fitting)."""
        if not self.is_fitted:
            return 0
        return int(sum(t.numel() for t in self._tensors().values()))

    @property
    def feature_recipe(self) -> dict[str, Any]:
        """How the features this predictor reads are made, as plain data: ``method``, ``use_rep`` and the
        ``inputs`` record of each key (what :func:`hist2st_tk.pp.model_features` replays)."""
        return {"method": self.method, "use_rep": list(self.use_rep), "inputs": copy.deepcopy(self.inputs)}

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`load`) has run."""
        return self.genes is not None

    @doc_params
    def fit(
        self,
        sdatas: SpatialData | Sequence[SpatialData],
        *,
        genes: Sequence[str],
        table_key: str = TABLE_KEY,
    ) -> Predictor:
        """Fit on training sections; returns the predictor itself.

        Parameters
        ----------
        sdatas
            The training sections; each needs every ``use_rep`` key and every gene of ``genes``.
        genes
            The gene panel to predict (targets are the log-normalised ``X``).
        {table_key}
        """
        from spatialdata import SpatialData

        sdatas = [sdatas] if isinstance(sdatas, SpatialData) else list(sdatas)
        if not sdatas:
            msg = "`sdatas` is empty: pass at least one training section."
            raise ValueError(msg)
        genes = pd.Index([str(g) for g in genes])
        if genes.empty or genes.has_duplicates:
            msg = "`genes` must be a non-empty list of distinct gene names."
            raise ValueError(msg)
        tables = [get_table(sd, table_key) for sd in sdatas]
        inputs = self._describe_inputs(sdatas[0], tables[0], table_key)
        features = [
            self._section_inputs(sd, table, table_key, recorded=inputs)
            for sd, table in zip(sdatas, tables, strict=True)
        ]
        targets = [expression(table, genes, table_key) for table in tables]
        check_learnable(targets, genes, table_key)
        sections = [section_name(table, i) for i, table in enumerate(tables)]
        self.genes, self.inputs, self.trained_on = genes, inputs, list(dict.fromkeys(sections))
        self.training_mpp = [section_mpp(sd, table) for sd, table in zip(sdatas, tables, strict=True)]
        try:
            self._fit(features, targets, sections, [table.obs for table in tables])
        except Exception:
            self.genes = None
            raise
        if self.use_rep:  # models that read obsm features: their training distribution, for novelty
            # uncentred: a slide that looks unlike the training ones as a whole must stand out
            raw = [self._features(table, table_key, recorded=inputs, center=False) for table in tables]
            self.novelty = FeatureNovelty.fit(raw, sections, seed=self.seed)
        return self

    def predict(self, sdata: SpatialData, *, table_key: str = TABLE_KEY) -> pd.DataFrame:
        """Predicted log-normalised expression, spots x panel genes (index = the table's ``obs_names``).

        Writes nothing; :func:`hist2st_tk.tl.predict_expression` writes the result into the table.
        """
        return self.predict_all(sdata, table_key=table_key)[0]

    def predict_all(
        self, sdata: SpatialData, *, table_key: str = TABLE_KEY
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The expression of :meth:`predict` and the per-spot annotations the method predicts besides
        (e.g. ``tumor_score``, and ``novelty`` for models that record their training distribution; an
        empty frame for methods without any). Writes nothing."""
        if not self.is_fitted:
            msg = f"This {self.method!r} predictor is not fitted; call `fit` or `load` first."
            raise ValueError(msg)
        table = get_table(sdata, table_key)
        features = self._section_inputs(sdata, table, table_key, recorded=self.inputs)
        result = self._predict(features)
        predicted, extra = result if isinstance(result, tuple) else (result, {})
        if self.novelty is not None:
            raw = self._features(table, table_key, recorded=self.inputs, center=False)
            extra = {**extra, "novelty": self.novelty.score(raw)}
        index = table.obs_names.copy()
        expression_frame = pd.DataFrame(
            np.asarray(predicted, dtype=np.float32), index=index, columns=self.genes.copy()
        )
        return expression_frame, pd.DataFrame(extra, index=index)

    def mpp_range(self) -> tuple[float, float] | None:
        """Microns per pixel of the images the model is meant for, ``(lowest, highest)``.

        ``validated_mpp`` when set (e.g. by the script that trains and benchmarks the default model);
        else, for features rendered at a working resolution, any image at least as fine as that or as
        the coarsest training image; else within a factor 1.5 of the training images. ``None`` when the
        training images' scale is unknown.
        """
        if self.validated_mpp is not None:
            return (float(self.validated_mpp[0]), float(self.validated_mpp[1]))
        known = [mpp for mpp in self.training_mpp if mpp]
        working = [spec["working_mpp"] for spec in self.inputs.values() if spec.get("working_mpp")]
        if working:
            return (0.0, max([*working, *known]))
        return (min(known) / 1.5, max(known) * 1.5) if known else None

    # -- inputs -----------------------------------------------------------------------------------
    def _describe_inputs(self, sdata: SpatialData, table, table_key: str) -> dict[str, dict]:
        """What the model reads, recorded at fit time and checked at predict time (default: ``obsm`` keys)."""
        return self._check_inputs(table, table_key, recorded=None)

    def _section_inputs(self, sdata: SpatialData, table, table_key: str, *, recorded: dict):
        """The model's input for one section (default: the ``use_rep`` features, spots x d)."""
        return self._features(table, table_key, recorded=recorded)

    def _check_inputs(self, table, table_key: str, *, recorded: dict | None) -> dict[str, dict]:
        """What produced each feature key (encoder, patch size), checked against what the model was fit on."""
        found = {}
        for key in self.use_rep:
            if key not in table.obsm:
                msg = (
                    f"Table {table_key!r} has no obsm[{key!r}], which this {self.method!r} model reads; "
                    f"`ht.pp.model_features(sdata, model)` computes every feature a model reads "
                    f"(`ht.pp.image_features` writes `X_{{encoder}}`). obsm keys: {list(table.obsm)}."
                )
                raise KeyError(msg)
            found[key] = feature_record(table, key)
        if recorded is not None:
            for key, spec in found.items():
                has_params = bool(feature_params(table, key))
                compare_records(key, spec, recorded.get(key, {}), has_params=has_params, table_key=table_key)
        return found

    def _features(
        self, table, table_key: str, *, recorded: dict | None, center: bool | None = None
    ) -> np.ndarray:
        """The ``use_rep`` features of a table, spots x d, checked; centred when the model centres
        (``center=None``) or as ``center`` says."""
        self._check_inputs(table, table_key, recorded=recorded)
        features = np.hstack([np.asarray(table.obsm[key], dtype=np.float32) for key in self.use_rep])
        if not np.isfinite(features).all():
            rows = np.where(~np.isfinite(features).all(axis=1))[0]
            msg = (
                f"obsm {self.use_rep} of table {table_key!r} holds NaN or infinite values in "
                f"{len(rows)} spots, e.g. {format_ids(table.obs_names[rows])}."
            )
            raise ValueError(msg)
        if self.center if center is None else center:
            features = features - features.mean(axis=0)
        return features

    # -- files ------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything but the tensors, as plain types."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "genes": list(self.genes) if self.genes is not None else None,
            "use_rep": self.use_rep,
            "inputs": self.inputs,
            "seed": self.seed,
            "center": self.center,
            "hparams": self.hparams,
            "trained_on": self.trained_on,
            "training_mpp": self.training_mpp,
            "validated_mpp": list(self.validated_mpp) if self.validated_mpp is not None else None,
            "history": self.history,
            "package_version": package_version(),
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model into the directory ``path`` (``model.json`` + ``weights.safetensors``).

        The directory is written under a temporary name and renamed into place, so it is complete or
        absent. An existing non-empty ``path`` is refused unless ``overwrite=True``. Weights holding NaN
        or infinite values are refused: :meth:`load` would refuse them.
        """
        if not self.is_fitted:
            msg = "Only a fitted predictor can be saved."
            raise ValueError(msg)
        tensors = self._tensors()
        if self.novelty is not None:
            tensors.update(self.novelty.tensors())
        bad = nonfinite_tensor(tensors)
        if bad is not None:
            msg = (
                f"Cannot save this {self.method!r} model: it holds NaN or infinite values in {bad}; "
                "did its training diverge?"
            )
            raise ValueError(msg)
        path = write_model_dir(
            path,
            tensors,
            config_file=CONFIG_FILE,
            config_text=json.dumps(self.config(), indent=2),
            overwrite=overwrite,
        )
        logger.info("saved %s model (%d genes) to %s", self.method, len(self.genes), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        """A predictor saved by :meth:`save`; refuses missing, foreign or corrupted files.

        Before the model is built, ``model.json`` is checked against its schema
        (:mod:`~hist2st_tk.models._schema`) and every tensor for NaN or infinite values; then the name and
        shape of every tensor are checked against the method, the recorded genes and the recorded input
        widths. Each error names the file and the field or tensor at fault.
        """
        config, tensors = read_model_dir(path, _METHODS)
        model_cls = method_class(config["method"])
        if cls is not Predictor and not issubclass(model_cls, cls):
            msg = f"{str(path)!r} holds a {config['method']!r} model, not a {cls.method!r} one."
            raise ValueError(msg)
        model = from_config(model_cls, config, Path(path) / CONFIG_FILE)
        novelty = {name: tensors.pop(name) for name in list(tensors) if name.startswith(NOVELTY_PREFIX)}
        try:
            model._load_tensors(tensors)  # the method's own tensors first: their errors tell the most
            model.novelty = FeatureNovelty.pop_from(novelty, width=model._input_width())
        except (KeyError, RuntimeError, ValueError) as err:
            reason = err.args[0] if isinstance(err, KeyError) and err.args else err
            msg = (
                f"The weights in {str(path)!r} do not fit a {config['method']!r} model: {reason}; "
                f"{model._recorded_sizes()}."
            )
            raise ValueError(msg) from None
        return model

    def _input_widths(self) -> dict[str, int]:
        """The width of each feature key the model reads, as recorded at fit (``inputs[key]["dim"]``)."""
        return {key: int(self.inputs[key]["dim"]) for key in self.use_rep}

    def _input_width(self) -> int:
        """The number of features per spot the model reads (its ``use_rep`` side by side)."""
        return sum(self._input_widths().values())

    def _recorded_sizes(self) -> str:
        """What the tensors' shapes derive from, for error messages."""
        widths = self._input_widths()
        return f"model.json records {len(self.genes)} genes" + (f" and inputs {widths}" if widths else "")
