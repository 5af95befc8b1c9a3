"""The report's front page: the answer of the run, per estimator (issue 20).

The answer of the analysis is the combined population slope γ of the observed lenses (spec/science.md §4: the sum
of the per-lens curves, MLE and coverage-recalibrated intervals, :func:`lensinfer.infer.summarise_observations`).
:func:`write_front_page` reads every estimator's ``summary.json`` and writes

* ``front_page.rst`` — reStructuredText that ``report/workflow.rst`` includes at report time, so that the landing
  page of ``results/report.html`` states the result: per estimator the combined γ with its intervals (recalibrated
  when thresholds for the combination exist, else labelled Wilks), the number of lenses, the lenses flagged by the
  misspecification check when the summary has one (``per_lens[name]["misspecification"]["flagged"]``), the
  observation source, and the headline figure (embedded, so the report stays one self-contained file);
* ``result.html`` — the same as a standalone page, the report item (category *Result*) through which
  ``report/workflow.rst`` finds ``front_page.rst`` (Snakemake renders that template with the report's files only).

Only the standard library is used (the figure rules' environment suffices).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["LevelInterval", "EstimatorResult", "read_result", "front_page_rst", "front_page_html",
           "write_front_page", "headline_caption", "ESTIMATOR_LABELS", "SOURCE_LABELS"]

ESTIMATOR_LABELS = {"nre": "NRE (likelihood-ratio estimator)", "npe": "NPE (flow posterior)"}
SOURCE_LABELS = {
    "mock": "mock — simulated frames, not real data (the offline demo)",
    "local": "local FITS files",
    "mast": "HST images downloaded from MAST",
}
#: marks an interval end that reaches the edge of the γ grid (the prior bound)
EDGE = "†"


@dataclass(frozen=True)
class LevelInterval:
    """One confidence level of the combined γ: the interval and how its threshold was set."""

    level: float
    low: float
    high: float
    low_open: bool
    high_open: bool
    recalibrated: bool

    def text(self) -> str:
        lo = f"{self.low:.2f}{EDGE if self.low_open else ''}"
        hi = f"{self.high:.2f}{EDGE if self.high_open else ''}"
        return f"[{lo}, {hi}]" + ("" if self.recalibrated else " (Wilks)")


@dataclass
class EstimatorResult:
    """What the front page says about one estimator (``mle`` is None when it gives no γ)."""

    estimator: str
    n_lenses: int
    mle: float | None = None
    intervals: list[LevelInterval] = field(default_factory=list)
    threshold_set_size: int | None = None
    misspecification_checked: bool = False
    flagged: list[tuple[str, float | None]] = field(default_factory=list)
    source: Any = None
    #: what inference let through and said (``summary.json`` ``input_notes``, e.g. reference-mode zero points)
    input_notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ESTIMATOR_LABELS.get(self.estimator, self.estimator.upper())


def _level_key(key: str) -> float:
    return float(key)


def read_result(estimator: str, summary: Mapping[str, Any]) -> EstimatorResult:
    """The front-page facts of one ``summary.json`` (robust to keys other stages may not write)."""
    per_lens = summary.get("per_lens") or {}
    n = int(summary.get("n_lenses", len(per_lens) or len(summary.get("per_lens_parameters") or {})))
    res = EstimatorResult(estimator=estimator, n_lenses=n,
                          source=summary.get("observation_source", summary.get("observations", summary.get("source"))))
    res.input_notes = [str(n) for n in summary.get("input_notes") or []]
    combined = summary.get("combined")
    if not combined:
        return res
    res.mle = float(combined["mle"])
    for key in sorted(combined.get("intervals", {}), key=_level_key):
        entry = combined["intervals"][key]
        recal = "recalibrated" in entry
        iv = entry["recalibrated"] if recal else entry["nominal"]
        res.intervals.append(LevelInterval(_level_key(key), float(iv["low"]), float(iv["high"]),
                                           bool(iv.get("low_open")), bool(iv.get("high_open")), recal))
    if summary.get("combined_threshold_set_size") is not None:
        res.threshold_set_size = int(summary["combined_threshold_set_size"])
    checks = {name: lens["misspecification"] for name, lens in per_lens.items()
              if isinstance(lens, Mapping) and isinstance(lens.get("misspecification"), Mapping)}
    res.misspecification_checked = bool(checks)
    res.flagged = [(name, None if c.get("p_value") is None else float(c["p_value"]))
                   for name, c in sorted(checks.items()) if c.get("flagged")]
    return res


def _percent(level: float) -> str:
    return f"{level * 100:g} %"


def _source_text(source: Any, fallback: str | None) -> str:
    """The observation source: the summary's own record when present, else the configured one."""
    value = source if source not in (None, "", {}) else fallback
    if isinstance(value, Mapping):
        kind_key = next((k for k in ("source", "kind", "type") if k in value), None)
        head = SOURCE_LABELS.get(str(value[kind_key]), str(value[kind_key])) if kind_key else ""
        rest = ", ".join(f"{k}: {v}" for k, v in value.items()
                         if k != kind_key and not isinstance(v, (Mapping, list, tuple)))
        return "; ".join(x for x in (head, rest) if x) or "unknown"
    if value is None:
        return "unknown"
    return SOURCE_LABELS.get(str(value), str(value))


def _levels(results: Sequence[EstimatorResult]) -> list[float]:
    return sorted({iv.level for r in results for iv in r.intervals})


def _cells(r: EstimatorResult, levels: Sequence[float]) -> list[str]:
    if r.mle is None:
        return [r.label, "no γ (gamma_pop is not a flow target)", *["—"] * len(levels), str(r.n_lenses)]
    by_level = {iv.level: iv.text() for iv in r.intervals}
    return [r.label, f"{r.mle:.2f}", *[by_level.get(lv, "—") for lv in levels], str(r.n_lenses)]


def _notes(results: Sequence[EstimatorResult]) -> list[str]:
    """Sentences under the table: threshold set sizes, grid edges, the misspecification check."""
    notes = []
    for r in results:
        if r.mle is None:
            continue
        kinds = {iv.recalibrated for iv in r.intervals}
        if True in kinds and r.threshold_set_size is not None:
            same = r.threshold_set_size == r.n_lenses
            notes.append(f"{r.estimator.upper()}: intervals recalibrated with the coverage thresholds of combined sets "
                         f"of N = {r.threshold_set_size} simulated lenses"
                         + ("" if same else f" (this run has {r.n_lenses} lenses: no thresholds for N = {r.n_lenses})")
                         + ".")
        elif False in kinds:
            notes.append(f"{r.estimator.upper()}: no recalibrated thresholds for this combination; the intervals are "
                         "Wilks intervals, which under-cover for combined lenses.")
    if any(iv.low_open or iv.high_open for r in results for iv in r.intervals):
        notes.append(f"{EDGE} the interval reaches the edge of the γ grid (the prior bound).")
    for r in results:
        if not r.misspecification_checked:
            continue
        if r.flagged:
            names = ", ".join(name + ("" if p is None else f" (p = {p:.2g})") for name, p in r.flagged)
            notes.append(f"Misspecification check ({r.estimator.upper()}): {len(r.flagged)} of {r.n_lenses} lenses "
                         f"flagged — {names}. Their curves may not be trustworthy.")
        else:
            notes.append(f"Misspecification check ({r.estimator.upper()}): no lens flagged (of {r.n_lenses}).")
    for r in results:
        if r.input_notes:
            notes.append(f"Input ({r.estimator.upper()}), {len(r.input_notes)} note(s): {r.input_notes[0]}"
                         + (f" (and {len(r.input_notes) - 1} more in summary.json input_notes)"
                            if len(r.input_notes) > 1 else ""))
    return notes


def _headline_sentence(results: Sequence[EstimatorResult]) -> str:
    parts = []
    for r in results:
        if r.mle is None:
            continue
        first = r.intervals[0] if r.intervals else None
        iv = f" {first.text()} ({_percent(first.level)})" if first else ""
        parts.append(f"{r.estimator.upper()} {r.mle:.2f}{iv}")
    return "; ".join(parts)


def _image_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _rst_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("_", "\\_").replace("|", "\\|")


def front_page_rst(results: Sequence[EstimatorResult], *, source: str | None = None,
                   headline: str | Path | None = None, headline_caption: str = "") -> str:
    """reStructuredText of the front page (included by ``report/workflow.rst``; must not contain Jinja syntax)."""
    levels = _levels(results)
    n = max((r.n_lenses for r in results), default=0)
    src = _source_text(next((r.source for r in results if r.source is not None), None), source)
    lines = ["Result", "======", ""]
    headline_text = _headline_sentence(results)
    lines += [f"**Combined population slope γ of {n} observed lenses**" + (f": {headline_text}." if headline_text else "."),
              "", f"Observations: {_rst_escape(src)}.", ""]
    header = ["estimator", "combined γ (MLE)", *[f"{_percent(lv)} interval" for lv in levels], "lenses"]
    lines += [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *(_cells(r, levels) for r in results)]:
        lines += [f"   {'*' if i == 0 else ' '} - {_rst_escape(c)}" for i, c in enumerate(row)]
    lines.append("")
    lines += [f"| {_rst_escape(note)}" for note in _notes(results)]
    lines.append("")
    if headline is not None:
        # the URI on indented lines of 76 characters (docutils joins them; one long line would exceed its limit)
        uri = _image_uri(headline)
        lines += [".. image::", *(f"   {uri[i:i + 76]}" for i in range(0, len(uri), 76)),
                  "   :alt: headline figure", "   :width: 100%", ""]
        if headline_caption:
            lines += [f"*{_rst_escape(headline_caption)}*", ""]
    text = "\n".join(lines) + "\n"
    if "{{" in text or "{%" in text or "{#" in text:
        raise ValueError("front page text contains Jinja syntax; it would break report/workflow.rst")
    return text


def front_page_html(results: Sequence[EstimatorResult], *, source: str | None = None,
                    headline: str | Path | None = None, headline_caption: str = "") -> str:
    """The same content as a standalone HTML page (the report item *Result*)."""
    levels = _levels(results)
    n = max((r.n_lenses for r in results), default=0)
    src = _source_text(next((r.source for r in results if r.source is not None), None), source)
    esc = html.escape
    headline_text = _headline_sentence(results)
    header = ["estimator", "combined γ (MLE)", *[f"{_percent(lv)} interval" for lv in levels], "lenses"]
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in _cells(r, levels)) + "</tr>" for r in results)
    notes = "".join(f"<p>{esc(note)}</p>" for note in _notes(results))
    figure = ""
    if headline is not None:
        figure = (f'<figure><img src="{_image_uri(headline)}" alt="headline figure" style="max-width:100%">'
                  f"<figcaption>{esc(headline_caption)}</figcaption></figure>")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>lensinfer result</title>"
            "<style>body{font-family:sans-serif;margin:1.5em;max-width:60em}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:.3em .6em}figcaption{font-style:italic}</style></head><body>"
            f"<h1>Result</h1><p><strong>Combined population slope γ of {n} observed lenses</strong>"
            f"{': ' + esc(headline_text) if headline_text else ''}.</p><p>Observations: {esc(src)}.</p>"
            "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + f"</tr>{rows}</table>{notes}{figure}"
            "</body></html>\n")


def headline_caption(figure: str | Path) -> str:
    """Caption of the front page's headline figure (``results/plots/{est}/gamma_curves.png`` or the observations)."""
    figure = Path(figure)
    if figure.name == "gamma_curves.png":
        est = figure.parent.name.upper()
        return (f"{est} γ curves: −2Δlog of each lens (thin) and of their combination (thick, dashed line at its MLE, "
                "grey: its recalibrated 68 % interval); coloured band: the 16–84 % range of the MLEs of simulated CDM "
                "(NFW-subhalo) lens sets (set size in the legend). Look for a combined curve with a clear minimum inside the grid, "
                "single lenses that disagree with the rest, and whether the combined γ falls in the CDM band.")
    return ("The preprocessed observations with their analysis masks (no estimator of this run gives γ). Look for "
            "lenses whose arcs fall outside the mask or are cut by the frame.")


def write_front_page(*, summaries: Mapping[str, str | Path], out_rst: str | Path, out_html: str | Path,
                     observation_source: str | None = None, headline: str | Path | None = None,
                     headline_caption: str = "") -> list[EstimatorResult]:
    """Read ``{estimator: summary.json}`` and write the front page as RST and HTML; returns what it read."""
    results = []
    for est, path in summaries.items():
        try:
            summary = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"front page: cannot read the {est} inference summary {path}: {err}") from err
        results.append(read_result(est, summary))
    kwargs = dict(source=observation_source, headline=headline, headline_caption=headline_caption)
    rst = front_page_rst(results, **kwargs)
    page = front_page_html(results, **kwargs)
    Path(out_rst).write_text(rst)
    Path(out_html).write_text(page)
    return results
