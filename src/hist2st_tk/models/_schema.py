"""The schema of a model directory: ``model.json`` as plain data with the one function that checks a
value against it (:func:`check`), and the checks of the tensors' names and shapes (:func:`check_shapes`).

A spec is a dict:

- ``"type"``: a kind or a tuple of kinds among ``bool``, ``int``, ``number`` (int or float), ``str``,
  ``list``, ``dict``, ``null`` (JSON's own types; a bool is not an int here);
- ``"required"``: whether a field of a dict must be present (default ``True``);
- ``"nonempty"``, ``"unique"``, ``"length"``, ``"min"``: constraints on a string, list or number;
- ``"items"``: the spec of every item of a list;
- ``"fields"``: the spec of each named field of a dict; other fields are unknown, and refused, unless
  ``"values"`` gives the spec of any other field (a dict spec with neither takes any content).

Hyper-parameters are checked against the type of the method's default (:func:`spec_of_default`), or
against the spec a method declares in ``hparam_specs`` where the default (``None``, ``"auto"``) does not
tell the type.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: How a message names each kind.
KINDS = {
    "bool": "a bool",
    "int": "an int",
    "number": "a number",
    "str": "a string",
    "list": "a list",
    "dict": "a dict",
    "null": "null",
}

NAME: dict[str, Any] = {"type": "str", "nonempty": True}

#: What produced a feature key the model reads, as recorded at fit (``Predictor._check_inputs``).
FEATURE_RECORD: dict[str, Any] = {
    "type": "dict",
    "fields": {
        "encoder": {"type": ("str", "null")},
        "patch_um": {"type": ("number", "null")},
        "working_mpp": {"type": ("number", "null")},
        "dim": {"type": "int", "min": 1},
        "aggregated_from": {"type": "str", "required": False},
        "graph": {"type": "dict", "required": False},
    },
}

#: Every field of a ``model.json`` of format 1. ``hparams`` and ``inputs`` are checked further once the
#: method and ``use_rep`` are known (:func:`hparams_spec`, :func:`inputs_spec`).
MODEL_JSON: dict[str, Any] = {
    "type": "dict",
    "fields": {
        "format": {"type": "str"},
        "format_version": {"type": "int", "min": 1},
        "method": NAME,
        "genes": {"type": "list", "items": NAME, "nonempty": True, "unique": True},
        "use_rep": {"type": "list", "items": NAME},
        "inputs": {"type": "dict", "values": {"type": "dict"}},
        "seed": {"type": "int"},
        "center": {"type": "bool", "required": False},
        "hparams": {"type": "dict"},
        "trained_on": {"type": "list", "items": {"type": "str"}},
        "training_mpp": {"type": "list", "items": {"type": ("number", "null")}, "required": False},
        "validated_mpp": {
            "type": ("list", "null"),
            "items": {"type": "number"},
            "length": 2,
            "required": False,
        },
        "history": {
            "type": "dict",
            "values": {"type": "list", "items": {"type": ("number", "str", "null")}},
            "required": False,
        },
        "package_version": {"type": "str", "required": False},
        "n_features": {"type": ("int", "null"), "required": False},
    },
}


def check(value: Any, spec: Mapping[str, Any], *, file: str, path: str = "") -> None:
    """Raise a ValueError naming ``file`` and the field (``path``, e.g. ``"hparams.hidden"``) where
    ``value`` breaks ``spec``."""
    kinds = spec.get("type", ())
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    kind = kind_of(value)
    if kinds and kind not in kinds and not (kind == "int" and "number" in kinds):
        _fail(file, path, f"must be {' or '.join(KINDS[k] for k in kinds)}, got {_show(value)}")
    if kind in ("str", "list", "dict"):
        if spec.get("nonempty") and not value:
            _fail(file, path, f"must not be empty, got {_show(value)}")
        if "length" in spec and len(value) != spec["length"]:
            _fail(file, path, f"must hold {spec['length']} items, got {len(value)}")
    if "min" in spec and kind in ("int", "number") and value < spec["min"]:
        _fail(file, path, f"must be at least {spec['min']}, got {value!r}")
    if kind == "list":
        for i, item in enumerate(value):
            check(item, spec.get("items", {}), file=file, path=f"{path}[{i}]")
        repeated = [item for item, n in Counter(map(repr, value)).items() if n > 1]
        if spec.get("unique") and repeated:
            _fail(file, path, f"holds duplicated names: {', '.join(repeated[:5])}")
    if kind == "dict":
        _check_fields(value, spec, file=file, path=path)


def _check_fields(value: dict, spec: Mapping[str, Any], *, file: str, path: str) -> None:
    """The named fields of a dict (the required ones present), then any other field against ``values``."""
    fields = spec.get("fields", {})
    for name, field in fields.items():
        if name in value:
            check(value[name], field, file=file, path=_child(path, name))
        elif field.get("required", True):
            _fail(file, _child(path, name), "is missing")
    for name in [name for name in value if name not in fields]:
        if "values" in spec:
            check(value[name], spec["values"], file=file, path=_child(path, name))
        elif "fields" in spec:
            _fail(file, _child(path, name), f"is unknown; expected one of {sorted(fields)}")


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fail(file: str, path: str, problem: str) -> None:
    msg = f"{file}: field {path!r} {problem}."
    raise ValueError(msg)


def kind_of(value: Any) -> str:
    """The JSON kind of a value (a tuple counts as a list: defaults may be tuples)."""
    if value is None:
        return "null"
    for kind, types in (("bool", bool), ("int", int), ("number", float), ("str", str), ("dict", dict)):
        if isinstance(value, types):  # bool first: a bool is an int in Python
            return kind
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def spec_of_default(default: Any) -> dict[str, Any]:
    """The spec a hyper-parameter takes from its default value; a list's items follow its first item."""
    kind = kind_of(default)
    if kind not in KINDS or kind == "null":
        msg = f"the default {default!r} does not tell the type; declare it in `hparam_specs`"
        raise TypeError(msg)
    if kind == "list" and default:
        return {"type": "list", "items": spec_of_default(default[0])}
    return {"type": kind}


def hparams_spec(defaults: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The spec of a method's ``hparams``: each optional (the default fills in), typed as its default
    or as ``declared``; any other name is unknown."""
    fields = {
        name: {**(declared.get(name) or spec_of_default(default)), "required": False}
        for name, default in defaults.items()
    }
    return {"type": "dict", "fields": fields}


def inputs_spec(use_rep: list[str]) -> dict[str, Any]:
    """The spec of ``inputs``: a record of every ``use_rep`` key, and any other input (graph, patches)."""
    return {"type": "dict", "fields": dict.fromkeys(use_rep, FEATURE_RECORD), "values": {"type": "dict"}}


def _show(value: Any, limit: int = 60) -> str:
    """``repr (type)`` of a value, shortened."""
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


# -- tensors ------------------------------------------------------------------------------------------
def check_shapes(
    tensors: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int | None, ...]],
    *,
    prefix: str = "",
    optional: Sequence[str] = (),
) -> None:
    """Raise a ValueError naming the missing tensors, the unexpected ones, or the first whose shape is
    not ``expected`` (``None``: any length on that axis); names in messages carry ``prefix``."""
    missing = [prefix + name for name in expected if name not in tensors and name not in optional]
    if missing:
        msg = f"missing tensors {missing}"
        raise ValueError(msg)
    unexpected = [prefix + name for name in tensors if name not in expected]
    if unexpected:
        msg = f"unexpected tensors {unexpected}"
        raise ValueError(msg)
    for name, shape in expected.items():
        found = tuple(tensors[name].shape) if name in tensors else shape
        if len(found) != len(shape) or any(
            e is not None and e != f for e, f in zip(shape, found, strict=False)
        ):
            msg = f"tensor {prefix + name!r} has shape {found}, expected {_shape_text(shape)}"
            raise ValueError(msg)


def axis_length(tensors: Mapping[str, torch.Tensor], name: str, axis: int) -> int | None:
    """The length of one axis of a tensor whose size the file alone sets (e.g. the number of principal
    components), for the shapes of the others; ``None`` when there is no such axis."""
    tensor = tensors.get(name)
    return int(tensor.shape[axis]) if tensor is not None and tensor.ndim > axis else None


def split_tensors(
    tensors: Mapping[str, torch.Tensor], prefixes: Sequence[str]
) -> list[dict[str, torch.Tensor]]:
    """The tensors under each prefix (names without it); a tensor under none of them is unexpected."""
    others = [name for name in tensors if not name.startswith(tuple(prefixes))]
    if others:
        msg = f"unexpected tensors {others}"
        raise ValueError(msg)
    return [{name[len(p) :]: t for name, t in tensors.items() if name.startswith(p)} for p in prefixes]


def nonfinite_tensor(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """``"tensor 'name' (n of N values)"`` of the first tensor holding NaN or infinite values, or ``None``."""
    import torch

    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                return f"tensor {name!r} ({bad} of {tensor.numel()} values)"
    return None


def _shape_text(shape: tuple[int | None, ...]) -> str:
    """A shape as Python writes a tuple, ``*`` for an axis of any length."""
    axes = ["*" if n is None else str(n) for n in shape]
    return f"({axes[0]},)" if len(axes) == 1 else f"({', '.join(axes)})"
