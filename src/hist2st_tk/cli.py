"""The ``hist2st`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    from ._files import package_version
    from .datasets import HER2ST_SECTIONS

    parser = argparse.ArgumentParser(
        prog="hist2st",
        description="Predict spatial gene expression from H&E histology (hist2st_tk).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (accepted anywhere on the line)"
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
    _add_bench(commands)
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
        "wsi", help="an H&E-only whole-slide image: SVS, pyramidal TIFF (ht.io.read_wsi); the store holds a copy"
    )
    wsi.add_argument("path", metavar="SLIDE", help="slide file")
    for kind in (st, visium, wsi):
        kind.add_argument("--out", required=True, help="the .zarr store to write")
        kind.add_argument("--sample", required=kind is st, default=None, help="section name")
        kind.add_argument("--mpp", type=float, default=None, help="microns per pixel (default: from the data)")
        kind.add_argument("--overwrite", action="store_true", help="replace an existing store")
        if kind is not wsi:
            kind.add_argument("--patient", default=None, help="patient of the section (default: the sample)")


def _add_steps(commands) -> None:
    """``features -> fit -> predict -> evaluate`` on ``.zarr`` sections, as the API does it in Python."""
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
    features.add_argument(
        "--encoder", default="lite0", help="registered encoder or timm:<name> (default: lite0)"
    )
    features.add_argument(
        "--patch-um", type=float, nargs="+", default=[112.0], help="patch edge(s) in microns (default: 112)"
    )
    features.add_argument("--weights", default=None, help="local weights file for the encoder")
    features.add_argument("--batch-size", type=int, default=32, help="patches per batch (default: 32)")
    features.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: 0)")
    features.add_argument("--device", default="auto", help="torch device (default: auto)")

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
    fit.add_argument("--method", default="ridge", help="predictor method (default: ridge)")
    fit.add_argument(
        "--genes", type=int, default=250, help="panel: top-N mean expressed genes (default: 250)"
    )
    fit.add_argument("--use-rep", nargs="+", default=None, help="obsm feature key(s) (default: the method's)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
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
    cohort.add_argument("--workers", type=int, default=1, help="worker processes (default: 1, no dask)")
    cohort.add_argument("--overwrite", action="store_true", help="redo slides whose store exists")
    for kind in (slide, cohort):
        kind.add_argument("--model", default=None, help="model directory (default: the shipped model)")
        kind.add_argument("--tile-um", type=float, default=112.0, help="tile edge in microns (default: 112)")
        kind.add_argument(
            "--min-tissue", type=float, default=0.5, help="least tissue fraction of a tile (default: 0.5)"
        )
        kind.add_argument("--batch-tiles", type=int, default=4096, help="tiles per streamed batch (default: 4096)")


def _run_step(args) -> None:
    from . import _cli_steps as steps

    if args.command == "read":
        options = {k: v for k, v in vars(args).items() if k not in ("command", "debug", "reader", "out", "overwrite")}
        path = steps.read(args.reader, out=args.out, overwrite=args.overwrite, **options)
        print(f"Written {path}")
    elif args.command == "slide":
        path = steps.slide(
            args.slide,
            out=args.out,
            model=args.model,
            mpp=args.mpp,
            tile_um=args.tile_um,
            min_tissue=args.min_tissue,
            batch_tiles=args.batch_tiles,
            checkpoint_dir=args.checkpoint_dir,
        )
        print(f"Predictions written into {path}")
    elif args.command == "cohort":
        report = steps.cohort(
            args.slides,
            out=args.out,
            model=args.model,
            mpp=args.mpp,
            n_workers=args.workers,
            tile_um=args.tile_um,
            min_tissue=args.min_tissue,
            batch_tiles=args.batch_tiles,
            overwrite=args.overwrite,
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


def _add_bench(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure speed and accuracy (writes JSON + Markdown tables)",
        description="Benchmarks on the real HER2ST data; every number names its protocol and data.",
    )
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    features = kinds.add_parser(
        "features",
        help="patches/s of ht.pp.image_features versus the bare encoder forward",
        description=(
            "On one HER2ST section: patches/s of ht.pp.image_features (lite0, 112 um patches by default) "
            "and of the bare encoder forward on pre-made tensors, measured in the same run; their ratio "
            "(goal >= 0.8) and the peak memory. Writes features.json and features.md."
        ),
    )
    features.add_argument("--section", default="B4", help="HER2ST section (default: B4)")
    features.add_argument("--encoder", default="lite0", help="encoder name (default: lite0)")
    features.add_argument(
        "--patch-um", type=float, default=112.0, help="patch edge in microns (default: 112)"
    )
    features.add_argument("--batch-size", type=int, default=32, help="patches per batch (default: 32)")
    features.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 1],
        help="DataLoader worker counts to try (default: 0 1)",
    )
    features.add_argument(
        "--repeats", type=int, default=2, help="alternating runs; the best of each is kept (default: 2)"
    )
    features.add_argument("--data-dir", default=None, help="folder holding the HER2ST section folders")
    features.add_argument("--out", default="bench_output", help="output folder (default: bench_output)")

    accuracy = kinds.add_parser(
        "accuracy",
        help="cross-validated accuracy of the predictors on HER2ST (her2st6-loso, her2st-cross-patient)",
        description=(
            "Cross-validate each method on the six HER2ST sections under the named protocols, with lite0 "
            "features of 56/112/224 um patches (computed once and cached). Writes accuracy.json, accuracy.md "
            "and a figure of per-gene Pearson per method."
        ),
    )
    accuracy.add_argument(
        "--methods",
        default=None,
        help=(
            "comma-separated benchmark recipes (default: all of hist2st_tk.bench._accuracy.METHODS; stnet "
            "alone takes about an hour per protocol on 2 CPU cores)"
        ),
    )
    accuracy.add_argument(
        "--protocol",
        default="her2st6-loso,her2st-cross-patient",
        help="comma-separated protocols (default: her2st6-loso,her2st-cross-patient)",
    )
    accuracy.add_argument("--data-dir", default=None, help="folder holding the HER2ST section folders")
    accuracy.add_argument("--out", default="bench_output", help="output folder (default: bench_output)")
    accuracy.add_argument("--cache", default=None, help="feature cache folder (default: OUT/cache)")

    graph = kinds.add_parser(
        "graph",
        help="time per epoch and peak memory of a graph predictor on synthetic sections up to 100,000 spots",
        description=(
            "Train a graph predictor (hespotex by default) for one epoch on synthetic table-only sections of "
            "increasing size (spatial blocks, sparse edges) and predict them; report seconds per epoch, "
            "predict seconds and peak memory (goal: under 4 GB at 100,000 spots). Writes graph.json and graph.md."
        ),
    )
    graph.add_argument(
        "--spots", type=int, nargs="+", default=[12_500, 25_000, 50_000, 100_000], help="section sizes"
    )
    graph.add_argument("--method", default="hespotex", help="graph predictor (default: hespotex)")
    graph.add_argument("--features", type=int, default=256, help="features per spot (default: 256)")
    graph.add_argument("--genes", type=int, default=1000, help="genes predicted (default: 1000)")
    graph.add_argument("--epochs", type=int, default=1, help="training epochs per size (default: 1)")
    graph.add_argument("--out", default="bench_output", help="output folder (default: bench_output)")
    _add_bench_wsi(kinds)
    _add_bench_robustness(kinds)


def _add_bench_robustness(kinds) -> None:
    from .bench._robustness import FOLDS, PERTURBATIONS

    robustness = kinds.add_parser(
        "robustness",
        help="accuracy on a held-out section imaged differently (resolution, JPEG, stain, blur)",
        description=(
            "Fit the default model's recipe on each fold of her2st-cross-patient (C->B4, B4->C) and predict "
            "the held-out section(s) as scanned and under named perturbations (ht.pp.perturb): "
            f"{', '.join(PERTURBATIONS)}. Reports mean per-gene Pearson (top250mean, top50var), tumor AUC of "
            "the model's head and of the marker signature, novelty, and each ratio to the unperturbed section "
            "(goal >= 0.9). Writes robustness.json, robustness.md and robustness.png."
        ),
    )
    robustness.add_argument(
        "--folds", default=",".join(FOLDS), help=f"comma-separated folds (default: {','.join(FOLDS)})"
    )
    robustness.add_argument(
        "--perturbations",
        default=None,
        help="comma-separated perturbations, as named above (default: all)",
    )
    robustness.add_argument("--recipe", default=None, help="benchmark recipe (default: the default model's)")
    robustness.add_argument("--data-dir", default=None, help="folder holding the HER2ST section folders")
    robustness.add_argument("--out", default="bench_output", help="output folder (default: bench_output)")
    robustness.add_argument("--cache", default=None, help="feature cache folder (default: OUT/cache)")


def _run_bench_robustness(args) -> None:
    from .bench._accuracy import DEFAULT_RECIPE
    from .bench._robustness import PERTURBATIONS, bench_robustness

    def names(text):
        return [x.strip() for x in text.split(",") if x.strip()]

    table = bench_robustness(
        names(args.folds),
        list(PERTURBATIONS) if args.perturbations is None else names(args.perturbations),
        recipe=args.recipe or DEFAULT_RECIPE,
        data_dir=args.data_dir,
        out_dir=args.out,
        cache_dir=args.cache,
    )
    print(table.to_string(index=False))
    print(f"\nWritten {args.out}/robustness.json, {args.out}/robustness.md and {args.out}/robustness.png")


def _add_bench_wsi(kinds) -> None:
    wsi = kinds.add_parser(
        "wsi",
        help="whole-slide prediction: peak memory, tiles/s versus the bare encoder, time versus tissue area",
        description=(
            "Write synthetic 100,000 x 100,000 px pyramidal slides (glass with 1, 2 and 4 square tissue regions "
            "repeating real HER2ST H&E; once, into --cache) and run each through ht.tl.predict_cohort in a fresh "
            "process: peak memory (goal <= 2 GB), tiles/s of the streamed features versus the bare encoder "
            "forward (goal >= 0.8), seconds per area (goal: linear). Writes wsi.json and wsi.md."
        ),
    )
    wsi.add_argument("--areas", type=int, nargs="+", default=[1, 2, 4], help="tissue regions per slide (1-4)")
    wsi.add_argument("--region-tiles", type=int, default=32, help="region edge in tiles (default: 32)")
    wsi.add_argument("--section", default="B4", help="HER2ST section whose H&E is repeated (default: B4)")
    wsi.add_argument("--encoder", default="lite0", help="encoder name (default: lite0)")
    wsi.add_argument("--batch-size", type=int, default=32, help="patches per batch (default: 32)")
    wsi.add_argument("--batch-tiles", type=int, default=4096, help="tiles per streamed batch (default: 4096)")
    wsi.add_argument("--data-dir", default=None, help="folder holding the HER2ST section folders")
    wsi.add_argument("--cache", default=None, help="folder of the synthetic slides (default: OUT/cache)")
    wsi.add_argument("--out", default="bench_output", help="output folder (default: bench_output)")


def _run_bench_wsi(args) -> None:
    from .bench._wsi import bench_wsi

    table = bench_wsi(
        areas=tuple(args.areas),
        region_tiles=args.region_tiles,
        section=args.section,
        encoder=args.encoder,
        batch_size=args.batch_size,
        batch_tiles=args.batch_tiles,
        data_dir=args.data_dir,
        cache_dir=args.cache,
        out_dir=args.out,
    )
    print(table.to_string(index=False))
    print(f"\nWritten {args.out}/wsi.json and {args.out}/wsi.md")


def _run_bench(args) -> None:
    if args.bench == "features":
        from .bench._features import bench_features

        table = bench_features(
            args.section,
            encoder=args.encoder,
            patch_um=args.patch_um,
            batch_size=args.batch_size,
            workers=tuple(args.workers),
            repeats=args.repeats,
            data_dir=args.data_dir,
            out_dir=args.out,
        )
        print(table.to_string(index=False))
        print(f"\nWritten {args.out}/features.json and {args.out}/features.md")
    elif args.bench == "accuracy":
        from .bench._accuracy import METHODS, bench_accuracy

        table = bench_accuracy(
            list(METHODS)
            if args.methods is None
            else [m.strip() for m in args.methods.split(",") if m.strip()],
            [p.strip() for p in args.protocol.split(",") if p.strip()],
            data_dir=args.data_dir,
            out_dir=args.out,
            cache_dir=args.cache,
        )
        print(table.to_string(index=False))
        print(f"\nWritten {args.out}/accuracy.json, {args.out}/accuracy.md and {args.out}/accuracy_*.png")
    elif args.bench == "graph":
        from .bench._graph import bench_graph

        table = bench_graph(
            args.spots,
            method=args.method,
            n_features=args.features,
            n_genes=args.genes,
            epochs=args.epochs,
            out_dir=args.out,
        )
        print(table.to_string(index=False))
        print(f"\nWritten {args.out}/graph.json and {args.out}/graph.md")
    elif args.bench == "wsi":
        _run_bench_wsi(args)
    elif args.bench == "robustness":
        _run_bench_robustness(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hist2st``; returns the exit status.

    An error prints one line to stderr and returns 1 (2 for a wrong command line, 130 when
    interrupted); ``--debug`` raises it with its traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = _parser().parse_args([arg for arg in argv if arg != "--debug"])
    try:
        _run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"hist2st {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"hist2st {args.command}: error: {_one_line(err)} (--debug shows the traceback)", file=sys.stderr)
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
    elif args.command == "bench":
        _run_bench(args)
    else:
        _run_step(args)


def _one_line(err: BaseException) -> str:
    """``err`` as one line: its message (a KeyError's without the quotes) after its type."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split()) or "(no message)"
    return f"{type(err).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
