"""The ``hist2st`` command line."""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def _parser(extensions: Sequence[CommandGroup] = ()) -> argparse.ArgumentParser:
    from ._files import package_version
    from .datasets import HER2ST_SECTIONS

    parser = argparse.ArgumentParser(
        prog="hist2st",
        description="Predict spatial gene expression from H&E histology (hist2st_tk).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (accepted anywhere on the line)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the main job end to end on the real HER2ST sections",
        description=(
            "Image features (lite0 at 56/112/224 um and neighbourhood context) of the HER2ST sections -> fit a "
            "predictor on all but the test section -> predict and evaluate the test section -> Leiden clusters "
            "of predicted expression -> tumor regions and region comparison -> leave-one-section-out "
            "predictions of every section -> patient-level table -> OUT/report.md with figures and tables. "
            "Sections come from --data-dir, $HIST2ST_TK_DATA/her2st or a checked download."
        ),
    )
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--data-dir", default=None, help="folder holding the HER2ST section folders")
    demo.add_argument(
        "--sections",
        nargs="+",
        default=list(HER2ST_SECTIONS),
        choices=HER2ST_SECTIONS,
        metavar="SECTION",
        help=f"sections to use (default: all of {', '.join(HER2ST_SECTIONS)})",
    )
    demo.add_argument(
        "--test-section",
        default="B4",
        choices=HER2ST_SECTIONS,
        help="section predicted by the model fitted on the others (default: B4)",
    )
    _add_read(commands)
    _add_steps(commands)
    _add_slides(commands)
    for extension in extensions:
        extension.add_commands(commands)
    return parser


def _add_read(commands) -> None:
    """``read st | visium | wsi``: a section or slide into a ``.zarr`` store, the input of every other step."""
    read = commands.add_parser(
        "read",
        help="read an ST or Visium section, or an H&E slide, into a .zarr store (ht.io.read_*)",
        description=(
            "Step 0. Read a section (H&E + spot expression) or an H&E-only slide into a SpatialData .zarr "
            "store, with its microns per pixel (from the data, or --mpp)."
        ),
    )
    kinds = read.add_subparsers(dest="reader", required=True, metavar="FORMAT")
    st = kinds.add_parser("st", help="legacy ST: counts, spot positions and the H&E image (ht.io.read_st)")
    st.add_argument("--counts", required=True, help="counts table (spots x genes, .tsv[.gz])")
    st.add_argument("--spots", required=True, help="spot positions (x, y, pixel_x, pixel_y)")
    st.add_argument("--image", required=True, help="full-resolution H&E image")
    visium = kinds.add_parser("visium", help="10x Visium: a Space Ranger output folder (ht.io.read_visium)")
    visium.add_argument("path", metavar="FOLDER", help="Space Ranger output folder (holding spatial/)")
    visium.add_argument("--counts-file", default=None, help="counts file in the folder (default: found)")
    visium.add_argument("--fullres-image", default=None, help="full-resolution H&E image (default: hires)")
    wsi = kinds.add_parser(
        "wsi",
        help="an H&E-only whole-slide image: SVS, pyramidal TIFF (ht.io.read_wsi); the store holds a copy",
    )
    wsi.add_argument("path", metavar="SLIDE", help="slide file")
    for kind in (st, visium, wsi):
        kind.add_argument("--out", required=True, help="the .zarr store to write")
        kind.add_argument("--sample", required=kind is st, default=None, help="section name")
        kind.add_argument(
            "--mpp", type=float, default=None, help="microns per pixel (default: from the data)"
        )
        kind.add_argument("--overwrite", action="store_true", help="replace an existing store")
        if kind is not wsi:
            kind.add_argument("--patient", default=None, help="patient of the section (default: the sample)")


def _option(
    parser, flag: str, function: Callable, parameter: str | None = None, *, help: str, **kwargs
) -> None:
    """Add ``flag`` with the default of ``function``'s ``parameter`` (by default the flag's name), so that the
    command line and the API cannot disagree; the help names the default."""
    default = inspect.signature(function).parameters[parameter or flag.lstrip("-").replace("-", "_")].default
    if kwargs.get("nargs") == "+" and not isinstance(default, list):
        default = [default]
    shown = " ".join(
        f"{v:g}" if isinstance(v, float) else str(v)
        for v in (default if isinstance(default, list) else [default])
    )
    parser.add_argument(flag, default=default, help=f"{help} (default: {shown})", **kwargs)


def _add_steps(commands) -> None:
    """``features -> fit -> predict -> evaluate`` on ``.zarr`` sections, as the API does it in Python."""
    from . import pp, tl

    features = commands.add_parser(
        "features",
        help="image features of the patch around each spot (ht.pp.image_features)",
        description=(
            "Step 1. Encode the patch of PATCH_UM microns around each spot of each section with an image "
            "encoder and store obsm['X_{encoder}'] (obsm['X_{encoder}_{um}um'] for several sizes) in the "
            "section's .zarr store."
        ),
    )
    features.add_argument(
        "sections", nargs="+", metavar="SECTION.zarr", help="SpatialData stores, updated in place"
    )
    _option(features, "--encoder", pp.image_features, help="registered encoder or timm:<name>")
    _option(features, "--patch-um", pp.image_features, type=float, nargs="+", help="patch edge(s) in microns")
    features.add_argument("--weights", default=None, help="local weights file for the encoder")
    _option(features, "--batch-size", pp.image_features, type=int, help="patches per batch")
    _option(features, "--workers", pp.image_features, "num_workers", type=int, help="DataLoader workers")
    _option(features, "--device", pp.image_features, help="torch device")

    fit = commands.add_parser(
        "fit",
        help="train a predictor on sections with features and expression (ht.tl.fit_predictor)",
        description=(
            "Step 2. Train a predictor of the log-normalised expression of a gene panel from the features of "
            "the training sections, and save it as a model directory (model.json + weights.safetensors)."
        ),
    )
    fit.add_argument("sections", nargs="+", metavar="SECTION.zarr", help="training sections")
    fit.add_argument("--out", required=True, help="model directory to write")
    _option(fit, "--method", tl.fit_predictor, help="predictor method")
    _option(fit, "--genes", tl.fit_predictor, type=int, help="panel: top-N mean expressed genes")
    fit.add_argument("--use-rep", nargs="+", default=None, help="obsm feature key(s) (default: the method's)")
    _option(fit, "--seed", tl.fit_predictor, type=int, help="random seed")
    fit.add_argument(
        "--param", nargs="+", default=[], metavar="NAME=VALUE", help="hyper-parameters, e.g. max_epochs=10"
    )

    predict = commands.add_parser(
        "predict",
        help="predict expression on sections (ht.tl.predict_expression)",
        description=(
            "Step 3. Predict the model's gene panel on each section and store it as obsm/layers "
            "['predicted_{method}'] (for a slide without genes: var and X) in the section's .zarr store. "
            "Features the model reads that a section lacks are computed first (ht.pp.model_features), so "
            "`hist2st predict SECTION.zarr` with the default model needs no other step."
        ),
    )
    predict.add_argument(
        "sections", nargs="+", metavar="SECTION.zarr", help="SpatialData stores, updated in place"
    )
    predict.add_argument(
        "--model", default=None, help="model directory (default: the model shipped with hist2st_tk)"
    )
    predict.add_argument(
        "--key-added", default=None, help="name of the predictions (default: predicted_{method})"
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="score predictions against measured expression (ht.tl.evaluate)",
        description=(
            "Step 4. Per-gene Pearson, Spearman, MAE, MSE, R2 and per-spot Pearson of the predictions KEY "
            "against the measured expression; scores are stored in the section and summarised here."
        ),
    )
    evaluate.add_argument("sections", nargs="+", metavar="SECTION.zarr", help="sections with predictions")
    evaluate.add_argument("--key", required=True, help="predictions to score, e.g. predicted_ridge")
    evaluate.add_argument("--label-key", default=None, help="obs column of tumor labels for the tumor AUC")
    evaluate.add_argument("--out", default=None, help="also write the summary to this CSV file")


def _add_slides(commands) -> None:
    """``slide`` and ``cohort``: H&E-only slides, tiled over their tissue and predicted in streamed batches."""
    from . import pp, tl

    slide = commands.add_parser(
        "slide",
        help="predict expression on the tissue tiles of a whole slide (ht.pp.tile_tissue, ht.tl.predict_slide)",
        description=(
            "Cover the tissue of an H&E-only slide with tiles and predict expression on each, streaming the "
            "features in batches. SLIDE is a slide file (the result, without the image, goes to --out) or a "
            ".zarr store of `hist2st read wsi` (updated in place unless --out is given)."
        ),
    )
    slide.add_argument("slide", help="slide file or .zarr store")
    slide.add_argument("--out", default=None, help="the .zarr store to write (required for a slide file)")
    slide.add_argument("--mpp", type=float, default=None, help="microns per pixel (default: the slide's)")
    slide.add_argument(
        "--checkpoint-dir", default=None, help="folder keeping finished batches, to resume an interrupted run"
    )
    cohort = commands.add_parser(
        "cohort",
        help="predict expression on a cohort of slides, one store each and a patient table (ht.tl.predict_cohort)",
        description=(
            "Each slide is read, tiled and predicted as by `hist2st slide`; OUT gets one .zarr per slide, "
            "patients.csv (mean predictions per patient) and cohort_report.csv. A finished slide is not "
            "redone; an interrupted one resumes from its finished batches."
        ),
    )
    cohort.add_argument("slides", nargs="+", help="slide files, or folders of slide files")
    cohort.add_argument("--out", required=True, help="folder of the results")
    cohort.add_argument("--mpp", type=float, default=None, help="microns per pixel of every slide")
    _option(
        cohort, "--workers", tl.predict_cohort, "n_workers", type=int, help="worker processes (1: no dask)"
    )
    cohort.add_argument("--overwrite", action="store_true", help="redo slides whose store exists")
    for kind in (slide, cohort):
        kind.add_argument("--model", default=None, help="model directory (default: the shipped model)")
        _option(kind, "--tile-um", pp.tile_tissue, type=float, help="tile edge in microns")
        _option(kind, "--min-tissue", pp.tile_tissue, type=float, help="least tissue fraction of a tile")
        _option(kind, "--batch-tiles", tl.predict_slide, type=int, help="tiles per streamed batch")


def _slide_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options ``hist2st slide`` and ``hist2st cohort`` share (added by :func:`_add_slides`)."""
    return {k: getattr(args, k) for k in ("model", "mpp", "tile_um", "min_tissue", "batch_tiles")}


def _run_step(args) -> None:
    from . import _cli_steps as steps

    if args.command == "read":
        options = {
            k: v for k, v in vars(args).items() if k not in ("command", "debug", "reader", "out", "overwrite")
        }
        path = steps.read(args.reader, out=args.out, overwrite=args.overwrite, **options)
        print(f"Written {path}")
    elif args.command == "slide":
        path = steps.slide(
            args.slide, out=args.out, checkpoint_dir=args.checkpoint_dir, **_slide_options(args)
        )
        print(f"Predictions written into {path}")
    elif args.command == "cohort":
        report = steps.cohort(
            args.slides,
            out=args.out,
            n_workers=args.workers,
            overwrite=args.overwrite,
            **_slide_options(args),
        )
        print(report[["slide", "status", "n_tiles", "seconds"]].round({"seconds": 1}).to_string(index=False))
        print(f"\nWritten {args.out}/patients.csv and {args.out}/cohort_report.csv")
    elif args.command == "features":
        steps.features(
            args.sections,
            encoder=args.encoder,
            patch_um=args.patch_um[0] if len(args.patch_um) == 1 else args.patch_um,
            weights=args.weights,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device,
        )
        print(f"Features written into {', '.join(args.sections)}")
    elif args.command == "fit":
        path = steps.fit(
            args.sections,
            out=args.out,
            method=args.method,
            genes=args.genes,
            use_rep=args.use_rep,
            seed=args.seed,
            **steps.parse_hparams(args.param),
        )
        print(f"Model written to {path}")
    elif args.command == "predict":
        steps.predict(args.sections, model=args.model, key_added=args.key_added)
        print(f"Predictions written into {', '.join(args.sections)}")
    elif args.command == "evaluate":
        summary = steps.evaluate(args.sections, key=args.key, label_key=args.label_key)
        print(summary.to_string(index=False))
        if args.out:
            summary.to_csv(args.out, index=False)
            print(f"\nWritten {args.out}")


class CommandGroup(Protocol):
    """Commands that sit beside the library's (``hist2st bench``): they add their parsers and run theirs."""

    def add_commands(self, commands: Any) -> None: ...

    def run(self, args: argparse.Namespace) -> bool:
        """Run the command of ``args`` when it is one of the group's; False otherwise."""
        ...


def main(argv: Sequence[str] | None = None, *, extensions: Sequence[CommandGroup] = ()) -> int:
    """Entry point of the library's commands; returns the exit status.

    ``hist2st`` itself (:mod:`hist2st_tk.__main__`) adds the benchmarks as ``extensions``, so that the
    library never imports them. An error prints one line to stderr and returns 1 (2 for a wrong command
    line, 130 when interrupted); ``--debug`` raises it with its traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = _parser(extensions).parse_args([arg for arg in argv if arg != "--debug"])
    try:
        if not any(extension.run(args) for extension in extensions):
            _run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"hist2st {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(
            f"hist2st {args.command}: error: {_one_line(err)} (--debug shows the traceback)", file=sys.stderr
        )
        return 1
    return 0


def _run(args) -> None:
    if args.command == "demo":
        import matplotlib

        matplotlib.use("Agg")
        from ._demo import run_demo

        report = run_demo(
            args.out, sections=args.sections, test_section=args.test_section, data_dir=args.data_dir
        )
        print(f"Demo report: {report.resolve()}")
    else:
        _run_step(args)


def _one_line(err: BaseException) -> str:
    """``err`` as one line: its message (a KeyError's without the quotes) after its type."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split()) or "(no message)"
    return f"{type(err).__name__}: {text}"
