"""The report's front page (lensinfer.frontpage): the combined γ per estimator, robust to optional summary keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lensinfer.frontpage import front_page_rst, read_result, write_front_page


def _interval(low, high, low_open=False, high_open=False):
    return {"low": low, "high": high, "low_open": low_open, "high_open": high_open}


def _summary(mle=1.58, recalibrated=True, n=13, misspecification=None, **extra):
    intervals = {}
    for key, (lo, hi) in {"0.68": (1.44, 1.71), "0.95": (1.10, 1.90)}.items():
        entry = {"nominal": _interval(lo + 0.05, hi - 0.05)}
        if recalibrated:
            entry["recalibrated"] = _interval(lo, hi, low_open=key == "0.95")
        intervals[key] = entry
    per_lens = {f"J{i:04d}+0000": {"mle": 1.5, "intervals": {}} for i in range(n)}
    if misspecification is not None:
        for name, flagged in zip(per_lens, misspecification):
            per_lens[name]["misspecification"] = {"noise_ratio": 1.0, "score": 3.0 if flagged else 0.1,
                                                  "p_value": 0.001 if flagged else 0.6, "flagged": flagged}
    return {"n_lenses": n, "per_lens": per_lens, "combined": {"mle": mle, "intervals": intervals},
            "combined_threshold_set_size": n, **extra}


def _docutils_html(rst: str) -> str:
    docutils_core = pytest.importorskip("docutils.core")
    parts = docutils_core.publish_parts(rst, writer="html", settings_overrides={"report_level": 2,
                                                                                   "halt_level": 2})
    return parts["html_body"]


def test_recalibrated_intervals_lenses_and_source():
    res = read_result("nre", _summary())
    assert res.mle == 1.58 and res.n_lenses == 13 and res.threshold_set_size == 13
    assert [iv.text() for iv in res.intervals] == ["[1.44, 1.71]", "[1.10†, 1.90]"]
    assert not res.misspecification_checked and res.flagged == []
    rst = front_page_rst([res], source="mock")
    assert "NRE 1.58 [1.44, 1.71] (68 %)" in rst and "of 13 observed lenses" in rst
    assert "mock — simulated frames, not real data" in rst and "† the interval reaches the edge" in rst
    assert "Misspecification" not in rst  # no check in the summary: nothing claimed
    html = _docutils_html(rst)  # valid reStructuredText: docutils halts on any warning here
    assert "<table" in html and "[1.10†, 1.90]" in html


def test_wilks_fallback_is_labelled():
    res = read_result("npe", _summary(recalibrated=False))
    assert all(not iv.recalibrated for iv in res.intervals)
    rst = front_page_rst([res])
    assert "(Wilks)" in rst and "no recalibrated thresholds" in rst


def test_threshold_set_size_other_than_the_lens_count_is_stated():
    res = read_result("nre", _summary(n=3, combined_threshold_set_size=13))
    rst = front_page_rst([res])
    assert "N = 13" in rst and "no thresholds for N = 3" in rst


def test_flagged_lenses_are_listed_when_the_check_exists():
    flags = [False] * 13
    flags[4] = True
    res = read_result("nre", _summary(misspecification=flags))
    assert res.misspecification_checked and res.flagged == [("J0004+0000", 0.001)]
    rst = front_page_rst([res])
    assert "1 of 13 lenses flagged" in rst and "J0004+0000 (p = 0.001)" in rst
    clean = front_page_rst([read_result("nre", _summary(misspecification=[False] * 13))])
    assert "no lens flagged (of 13)" in clean


def test_input_notes_are_said_on_the_front_page():
    """Reference-mode inputs let through with a zero point other than the training one (summary input_notes)."""
    notes = [f"observation J{i:04d}+0000 (m.json): raw e⁻/s at AB zero point 25.94, the model was trained at 25.127"
             for i in range(2)]
    res = read_result("nre", _summary(input_notes=notes))
    assert res.input_notes == notes
    rst = front_page_rst([res])
    assert "Input (NRE), 2 note(s): observation J0000+0000" in rst and r"and 1 more in summary.json input\_notes" in rst
    assert "note(s)" not in front_page_rst([read_result("nre", _summary())])
    _docutils_html(rst)


def test_source_from_the_summary_wins_over_the_config():
    for extra, expected in [({"observation_source": "mast"}, "HST images downloaded from MAST"),
                            ({"observations": {"source": "local", "local_dir": "obs"}}, "local FITS files; local_dir: obs")]:
        rst = front_page_rst([read_result("nre", _summary(**extra))], source="mock")
        assert f"Observations: {expected}." in rst.replace("\\_", "_")


def test_npe_without_gamma_and_headline_figure(tmp_path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(np.arange(3))
    png = tmp_path / "gamma_curves.png"
    fig.savefig(png)
    plt.close(fig)
    (tmp_path / "nre.json").write_text(json.dumps(_summary()))
    (tmp_path / "npe.json").write_text(json.dumps({"estimator": "npe", "n_lenses": 13, "gamma": None,
                                                   "per_lens_parameters": {"a": {}}}))
    results = write_front_page(summaries={"nre": tmp_path / "nre.json", "npe": tmp_path / "npe.json"},
                               out_rst=tmp_path / "front.rst", out_html=tmp_path / "result.html",
                               observation_source="mock", headline=png, headline_caption="Look for the minimum.")
    assert [r.mle for r in results] == [1.58, None]
    rst = (tmp_path / "front.rst").read_text()
    assert "no γ (gamma\\_pop is not a flow target)" in rst
    assert max(len(line) for line in rst.splitlines()) < 200  # the image URI is wrapped (docutils line limit)
    html = _docutils_html(rst)
    assert 'src="data:image/png;base64,' in html and "Look for the minimum." in html
    page = (tmp_path / "result.html").read_text()
    assert "<table>" in page and "1.58" in page and "data:image/png;base64," in page


def test_unreadable_summary_names_the_file(tmp_path: Path):
    with pytest.raises(ValueError, match="nre inference summary .*missing.json"):
        write_front_page(summaries={"nre": tmp_path / "missing.json"}, out_rst=tmp_path / "a.rst",
                         out_html=tmp_path / "a.html")
