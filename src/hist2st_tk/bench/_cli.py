"""``hist2st bench ...``: the benchmarks' commands, added to the library's command line by ``hist2st`` itself."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: Any) -> None:
    """Add ``bench`` and its benchmarks to the ``hist2st`` sub-commands ``commands``."""
    _add_bench(commands)


def run(args: argparse.Namespace) -> bool:
    """Run ``hist2st bench ...``; False for another command."""
    if args.command != "bench":
        return False
    _run_bench(args)
    return True


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
    from ._robustness import FOLDS, PERTURBATIONS

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
    from ._accuracy import DEFAULT_RECIPE
    from ._robustness import PERTURBATIONS, bench_robustness

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
    from ._wsi import bench_wsi

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
        from ._features import bench_features

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
        from ._accuracy import METHODS, bench_accuracy

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
        from ._graph import bench_graph

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
