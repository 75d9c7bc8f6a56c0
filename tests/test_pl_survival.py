from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import hist2st_tk as ht


def patients(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Patients whose survival time shortens with a risk score; a third of them censored."""
    rng = np.random.default_rng(seed)
    risk = rng.uniform(0, 1, n)
    time = rng.exponential(1.0 / (0.2 + 2.0 * risk))
    return pd.DataFrame(
        {
            "time": np.round(time * 12, 1),
            "event": rng.uniform(size=n) > 0.33,
            "risk": risk,
            "subtype": np.where(risk > 0.5, "HER2+", "luminal"),
        },
        index=[f"P{i:02d}" for i in range(n)],
    )


def legend(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_km_by_group(check_figure):
    from lifelines.statistics import logrank_test

    table = patients()
    fig = ht.pl.km(table, groupby="subtype", title="subtype")
    her2, luminal = table[table["subtype"] == "HER2+"], table[table["subtype"] == "luminal"]
    p = logrank_test(her2["time"], luminal["time"], her2["event"], luminal["event"]).p_value
    assert fig.axes[0].get_title() == f"subtype: log-rank p = {p:.3g}"
    assert p < 0.01  # the high-risk group dies sooner
    assert legend(fig) == [f"HER2+ (n={len(her2)})", f"luminal (n={len(luminal)})"]
    # groups take the cluster palette, the time axis its column in words
    from matplotlib.colors import to_hex

    from hist2st_tk.pl._utils import cluster_palette

    curves = [line for line in fig.axes[0].lines if line.get_label().endswith(")")]
    assert [to_hex(line.get_color()) for line in curves] == cluster_palette(2)
    assert fig.axes[0].get_xlabel() == "time"
    check_figure(fig, "km_groups")


def test_km_by_risk_quantiles_follows_the_curves():
    from lifelines import KaplanMeierFitter

    table = patients()
    original = table.copy()
    fig = ht.pl.km(table, risk_col="risk", ci=False)
    assert legend(fig) == ["low risk (n=20)", "high risk (n=20)"]
    low = table[table["risk"] <= table["risk"].median()]
    expected = KaplanMeierFitter().fit(low["time"], low["event"]).survival_function_.iloc[:, 0]
    drawn = fig.axes[0].lines[0]
    # the step curve passes through each (time, survival) point of the fitted estimate
    steps = pd.Series(drawn.get_ydata(), index=drawn.get_xdata()).groupby(level=0).last()
    np.testing.assert_allclose(steps.reindex(expected.index).to_numpy(), expected.to_numpy())
    pd.testing.assert_frame_equal(table, original)  # nothing added to the caller's table
    fig = ht.pl.km(table, risk_col="risk", n_groups=4)
    assert legend(fig) == [f"risk Q{i} (n=10)" for i in range(1, 5)]
    fig = ht.pl.km(table.rename(columns={"time": "os_months"}), duration_col="os_months", risk_col="risk")
    assert fig.axes[0].get_xlabel() == "os months"
    plt.close("all")


def test_km_bad_input():
    table = patients()
    with pytest.raises(ValueError, match="exactly one of `groupby`.*and `risk_col`"):
        ht.pl.km(table)
    with pytest.raises(ValueError, match="exactly one of `groupby`"):
        ht.pl.km(table, groupby="subtype", risk_col="risk")
    with pytest.raises(KeyError, match=r"lacks columns \['os_months'\]; it has \['time', 'event'"):
        ht.pl.km(table, duration_col="os_months", groupby="subtype")
    bad = table.assign(time=table["time"].where(table.index != "P03", -1.0))
    with pytest.raises(ValueError, match=r"1 rows have a missing or negative 'time', e.g. rows \['P03'\]"):
        ht.pl.km(bad, groupby="subtype")
    with pytest.raises(ValueError, match=r"'event' must hold 1/True \(event\) or 0/False"):
        ht.pl.km(table.assign(event=2), groupby="subtype")
    with pytest.raises(ValueError, match=r"at least two groups; 'subtype' gives \['luminal'\]"):
        ht.pl.km(table.assign(subtype="luminal"), groupby="subtype")
    with pytest.raises(ValueError, match="`n_groups` must be at least 2"):
        ht.pl.km(table, risk_col="risk", n_groups=1)
    with pytest.raises(ValueError, match="Cannot cut 'risk' into 3 quantile groups.*fewer groups"):
        ht.pl.km(table.assign(risk=np.r_[np.zeros(39), 1.0]), risk_col="risk", n_groups=3)
    with pytest.raises(TypeError, match="must be a DataFrame with one row per patient"):
        ht.pl.km(table.to_dict(), groupby="subtype")
    assert plt.get_fignums() == []
