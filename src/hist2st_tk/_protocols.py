"""Evaluation protocols (docs/protocols.md): named folds, gene panels and the reference numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: The six HER2ST sections with a full-resolution image: patient B (B4) and patient C (C2-C6).
HER2ST6: tuple[str, ...] = ("B4", "C2", "C3", "C4", "C5", "C6")

#: Reference mean Pearson per gene (docs/protocols.md): frozen ImageNet lite0 features of 112 um patches,
#: StandardScaler + PCA(256) + RidgeCV, panels chosen on the training sections of each fold.
REFERENCE: dict[str, dict[str, float]] = {
    "her2st6-loso": {"top250mean": 0.177, "top50var": 0.229},
    "C->B4": {"top250mean": 0.138, "top50var": 0.121},
    "B4->C": {"top250mean": 0.070, "top50var": 0.082},
}

#: Gene panels of the protocols: name -> (flavor of ``ht.pp.select_genes``, number of genes).
PANELS: dict[str, tuple[str, int]] = {"top250mean": ("top_mean", 250), "top50var": ("top_var", 50)}

PROTOCOLS: tuple[str, ...] = (
    "her2st6-loso",
    "her2st-cross-patient",
    "leave-one-section-out",
    "leave-one-patient-out",
)

Fold = tuple[str, list[str], list[str]]  # (name, training sections, held-out sections)


def loso_folds(sections: Sequence[str] = HER2ST6) -> list[Fold]:
    """Leave-one-section-out folds, named after the held-out section."""
    return [(held_out, [s for s in sections if s != held_out], [held_out]) for held_out in sections]


def protocol_folds(protocol: str | Sequence, patients: Mapping[str, str]) -> list[Fold]:
    """The folds of a named protocol over the sections ``patients`` (section -> patient), or explicit folds.

    Explicit folds are ``(training sections, held-out sections)`` pairs or ``(name, training, held-out)``.
    """
    sections = list(patients)
    if isinstance(protocol, str):
        if protocol == "her2st6-loso":
            _require(sections, HER2ST6, protocol)
            return loso_folds(HER2ST6)
        if protocol == "her2st-cross-patient":
            _require(sections, HER2ST6, protocol)
            c = [s for s in HER2ST6 if s != "B4"]
            return [("C->B4", c, ["B4"]), ("B4->C", ["B4"], c)]
        if protocol == "leave-one-section-out":
            return loso_folds(sections)
        if protocol == "leave-one-patient-out":
            by_patient: dict[str, list[str]] = {}
            for section, patient in patients.items():
                by_patient.setdefault(patient, []).append(section)
            if len(by_patient) < 2:
                msg = f"`leave-one-patient-out` needs sections of at least two patients; got {list(by_patient)}."
                raise ValueError(msg)
            return [
                (f"patient {p}", [s for s in sections if patients[s] != p], held)
                for p, held in by_patient.items()
            ]
        msg = f"Unknown protocol {protocol!r}; use one of {list(PROTOCOLS)} or a list of (train, test) folds."
        raise ValueError(msg)
    folds = []
    for i, fold in enumerate(protocol):
        name, train, test = fold if len(fold) == 3 else (f"fold {i}", *fold)
        train, test = list(train), list(test)
        _require(sections, [*train, *test], f"fold {name!r}")
        if set(train) & set(test):
            msg = f"Fold {name!r} trains and tests on the same sections {sorted(set(train) & set(test))}."
            raise ValueError(msg)
        if not train or not test:
            msg = f"Fold {name!r} needs at least one training and one held-out section."
            raise ValueError(msg)
        folds.append((str(name), train, test))
    return folds


def _require(sections: Sequence[str], needed: Sequence[str], what: str) -> None:
    missing = [s for s in needed if s not in sections]
    if missing:
        msg = (
            f"{what} needs the sections {missing}, which were not passed; sections passed: {list(sections)}."
        )
        raise ValueError(msg)
