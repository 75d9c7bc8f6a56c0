"""The model-directory file format of the predictors: writing its ``model.json``, reading it back checked.

A saved model is one directory: ``model.json`` (method, genes, inputs, hyper-parameters, training
sections, package version) and ``weights.safetensors`` (tensors only; nothing is unpickled on load).
Loading checks both before anything is predicted: ``model.json`` against its schema
(:mod:`hist2st_tk.models._schema`), every tensor for NaN and infinite values; the shapes of the tensors
are then checked by :meth:`hist2st_tk.models.Predictor.load`.

This module does not import the method registry (:mod:`hist2st_tk.models._base` imports this one): the
readers are given the registered methods, ``{method name: predictor class}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .._files import WEIGHTS_FILE, read_weights
from ._schema import MODEL_JSON, check, hparams_spec, inputs_spec, kind_of, nonfinite_tensor

if TYPE_CHECKING:
    import torch

    from ._base import Predictor

__all__ = ["CONFIG_FILE", "FORMAT", "FORMAT_VERSION", "from_config", "read_config", "read_model_dir"]

FORMAT = "hist2st_tk.predictor"
FORMAT_VERSION = 1
CONFIG_FILE = "model.json"


def from_config(model_cls: type[Predictor], config: dict, file: Path) -> Predictor:
    """An unfitted predictor with the settings and records of a checked ``model.json``."""
    try:
        model = model_cls(
            use_rep=config["use_rep"],
            seed=config["seed"],
            center=config.get("center", False),
            **config["hparams"],
        )
    except (TypeError, ValueError) as err:  # settings the schema cannot see, e.g. stnet given features
        msg = f"{str(file)!r} does not describe a valid {config['method']!r} model: {err}"
        raise ValueError(msg) from None
    model.genes = pd.Index(config["genes"])
    model.inputs = config["inputs"]
    model.trained_on = config["trained_on"]
    model.history = config.get("history", {})
    model.training_mpp = config.get("training_mpp", [])
    validated = config.get("validated_mpp")
    model.validated_mpp = tuple(validated) if validated is not None else None
    return model


def read_model_dir(
    path: str | Path, methods: Mapping[str, type[Predictor]]
) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(config, tensors)`` of a model directory, with an error naming what is missing or broken.

    ``config`` has passed the schema of ``model.json`` and no tensor holds NaN or infinite values;
    ``methods`` are the registered methods, ``{method name: predictor class}``.
    """
    path = Path(path)
    if not path.is_dir():
        msg = f"No model directory at {str(path)!r}."
        raise FileNotFoundError(msg)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        msg = f"The model directory {str(path)!r} lacks {missing}; was it written by `model.save`?"
        raise FileNotFoundError(msg)
    config = read_config(path / CONFIG_FILE, methods)
    tensors = read_weights(path / WEIGHTS_FILE)
    bad = nonfinite_tensor(tensors)
    if bad is not None:
        msg = (
            f"{str(path / WEIGHTS_FILE)!r} holds NaN or infinite values in {bad}; the weights file is "
            "corrupted, or was written by a training that diverged."
        )
        raise ValueError(msg)
    return config, tensors


def read_config(file: Path, methods: Mapping[str, type[Predictor]]) -> dict:
    """The fields of a ``model.json``, checked against its schema: foreign and newer formats first (a newer
    file may have fields this version does not know), then every field, the hyper-parameters of its
    method (one of ``methods``, ``{method name: predictor class}``) and the record of every input."""
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        msg = f"{str(file)!r} is not valid JSON ({err}); the model directory is corrupted."
        raise ValueError(msg) from None
    if not isinstance(config, dict):
        msg = f"{str(file)!r} must hold a JSON object (the fields of a model), got a {kind_of(config)}."
        raise ValueError(msg)
    if config.get("format") != FORMAT:
        msg = f"{str(file.parent)!r} is not a hist2st_tk predictor (format {config.get('format')!r})."
        raise ValueError(msg)
    version = config.get("format_version")
    if kind_of(version) == "int" and version > FORMAT_VERSION:
        msg = (
            f"{str(file.parent)!r} was written by a newer hist2st_tk (format {version}, "
            f"package {config.get('package_version')}); upgrade hist2st_tk to load it."
        )
        raise ValueError(msg)
    name = repr(str(file))
    check(config, MODEL_JSON, file=name)
    if config["method"] not in methods:
        msg = f"{name}: field 'method' must be one of {sorted(methods)}, got {config['method']!r} (str)."
        raise ValueError(msg)
    model_cls = methods[config["method"]]
    hparams = hparams_spec(model_cls.defaults, model_cls.hparam_specs)
    check(config["hparams"], hparams, file=name, path="hparams")
    check(config["inputs"], inputs_spec(config["use_rep"]), file=name, path="inputs")
    return config
