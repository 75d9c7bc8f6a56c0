"""``ht.pp.perturb`` says what it is doing before the slow part (decoding a whole scan)."""

from __future__ import annotations

import logging

import hist2st_tk as ht


def test_perturb_logs_a_line_before_decoding_the_image(caplog):
    sdata = ht.datasets.synthetic(n_spots=4, n_genes=4)
    with caplog.at_level(logging.INFO, logger="hist2st_tk"):
        ht.pp.perturb(sdata, mpp=2.0)
    messages = [record.getMessage() for record in caplog.records]
    start = messages.index("perturbing synthetic_he (400 x 400 px): decoding the image")
    assert any(m.startswith("perturbed synthetic_he") for m in messages[start + 1 :])
