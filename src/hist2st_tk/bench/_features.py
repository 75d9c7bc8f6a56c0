"""``hist2st bench features``: patches/s of image_features versus the bare encoder forward, same run."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ._report import write_report

#: Goal of the features issue: the patch pipeline keeps at least this fraction of the bare encoder speed.
GOAL_RATIO = 0.8


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_forward(module, spec, n: int, *, batch_size: int, device="cpu") -> float:
    """Patches/s of the encoder alone on pre-made, pre-normalised tensors (the upper bound), each batch
    split into the same passes as ``image_features`` runs (:func:`encoder_passes`)."""
    import torch

    from ..pp._features import encoder_passes

    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.rand(min(batch_size, n - i), 3, spec.input_px, spec.input_px, generator=generator)
        .mul_(2)
        .sub_(1)
        .contiguous(memory_format=torch.channels_last)
        for i in range(0, n, batch_size)
    ]
    module = module.to(device, memory_format=torch.channels_last)
    with torch.inference_mode():
        passes = [encoder_passes(batch.to(device), torch.device(device)) for batch in batches]
        for part in passes[0]:  # warm-up: kernels are chosen on the first call of each shape
            module(part)
        start = time.perf_counter()
        for batch in passes:
            for part in batch:
                module(part)
        seconds = time.perf_counter() - start
    return n / seconds


def bench_features(
    section: str = "B4",
    *,
    encoder: str = "lite0",
    patch_um: float = 112.0,
    batch_size: int = 32,
    workers: tuple[int, ...] = (0, 1),
    repeats: int = 2,
    data_dir: str | Path | None = None,
    out_dir: str | Path = "bench_output",
) -> pd.DataFrame:
    """Measure :func:`hist2st_tk.pp.image_features` on one HER2ST section against the bare encoder.

    For each ``num_workers`` in ``workers``: patches/s of the whole call (image decode and everything),
    patches/s of its streaming loop (read, resample, normalise, forward), the bare forward on pre-made
    tensors measured right after, their ratio, and the peak resident memory of the process so far.
    Each is the best of ``repeats`` alternating runs, so that a warm-up or a busy moment of the machine
    does not decide the ratio.
    Writes ``features.json`` and ``features.md`` into ``out_dir``.
    """
    from .. import datasets, pp
    from ..encoders import build_encoder

    sdata = datasets.her2st(section, data_dir=data_dir)
    n = sdata["table"].n_obs
    module, spec = build_encoder(encoder)
    rows = []
    for num_workers in workers:
        whole, streamed, bare = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            pp.image_features(
                sdata,
                encoder=encoder,
                patch_um=patch_um,
                batch_size=batch_size,
                num_workers=num_workers,
                progress=False,
            )
            whole.append(n / (time.perf_counter() - start))
            streamed.append(sdata["table"].uns[f"X_{encoder}"]["params"]["patches_per_s"])
            bare.append(bare_forward(module, spec, n, batch_size=batch_size))
        rows.append(
            {
                "section": section,
                "encoder": encoder,
                "patch_um": patch_um,
                "num_workers": num_workers,
                "patches": n,
                "call_patches_per_s": max(whole),
                "stream_patches_per_s": max(streamed),
                "bare_forward_patches_per_s": max(bare),
                "ratio_stream_to_bare": max(streamed) / max(bare),
                "goal_ratio": GOAL_RATIO,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    table = pd.DataFrame(rows)
    notes = [
        f"HER2ST section {section}, {n} spots; {patch_um:g} um patches resampled to {spec.input_px} px; "
        f"batch size {batch_size}; best of {repeats} alternating runs.",
        "call = the whole image_features call, image decode included; stream = its DataLoader loop "
        "(crop, resample, normalise, forward); bare = the encoder forward alone on pre-made tensors, "
        "measured in the same run right after.",
        "peak_rss_mb is the process peak so far (ru_maxrss), including the decoded image.",
        f"best ratio stream/bare: {np.max(table['ratio_stream_to_bare']):.2f} (goal >= {GOAL_RATIO}).",
    ]
    write_report("features", table, out_dir=out_dir, title="Image features throughput", notes=notes)
    return table
