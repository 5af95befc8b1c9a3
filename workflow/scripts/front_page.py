"""Snakemake adapter: the report's front page (lensinfer.frontpage.write_front_page)."""

from pathlib import Path

from lensinfer.frontpage import headline_caption, write_front_page
from lensinfer.workflow import logged

with logged(snakemake.log[0]) as log:  # noqa: F821
    inp, params, out = snakemake.input, snakemake.params, snakemake.output  # noqa: F821
    results = write_front_page(
        summaries=dict(zip(params.estimators, inp.summaries)), out_rst=out.rst, out_html=out.html,
        observation_source=params.observation_source, headline=inp.headline,
        headline_caption=headline_caption(Path(inp.headline)),
    )
    log.info("front page: %s", [(r.estimator, r.mle, [iv.text() for iv in r.intervals]) for r in results])
