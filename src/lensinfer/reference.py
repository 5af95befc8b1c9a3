"""Published numbers of Zhang, Şengül & Dvorkin (2023, MNRAS 527, 4183; arXiv:2308.09739) used as reference points.

The values were read off the figures stored in the reference code's notebook (gemyxzhang/neural-subhalo-slope-data,
``figures.ipynb``, HEAD f3250b6) by pixel measurement and copied from the project's seed specification
(spec/science.md §5 and §7): ± a few 0.01 in γ. Check them against the paper before quoting them.
"""

from __future__ import annotations

__all__ = ["CDM_SWEEP", "CITATION", "HST_COMBINED"]

CITATION = ("Zhang, Şengül & Dvorkin 2023, MNRAS 527, 4183 (arXiv:2308.09739), figures of the reference notebook; "
            "read off by pixel measurement (± a few 0.01)")

#: 13-lens MLE of simulated CDM sets against the concentration multiplier c_factor: profile → c_factor →
#: (median, 16 %, 84 %) of the MLEs of disjoint 13-image sets (NFW: DM14 concentration; TNFW: truncated NFW)
CDM_SWEEP: dict[str, dict[float, tuple[float, float, float]]] = {
    "NFW": {
        0.4: (1.47, 1.36, 1.59),
        0.6: (1.52, 1.38, 1.64),
        0.8: (1.58, 1.42, 1.76),
        1.0: (1.61, 1.42, 1.76),
        2.0: (1.81, 1.65, 1.91),
        4.0: (2.03, 1.90, 2.10),
        6.0: (2.16, 2.10, 2.24),
        8.0: (2.24, 2.16, 2.30),
        10.0: (2.31, 2.23, 2.38),
    },
    "TNFW": {
        0.4: (2.07, 1.10, 2.29),
        0.6: (2.25, 2.14, 2.35),
        0.8: (2.34, 2.23, 2.40),
        1.0: (2.35, 2.27, 2.41),
        2.0: (2.39, 2.34, 2.44),
        4.0: (2.44, 2.41, 2.48),
        6.0: (2.48, 2.44, 2.52),
        8.0: (2.50, 2.48, 2.54),
        10.0: (2.54, 2.50, 2.66),
    },
}

#: the 13 HST lenses combined: MLE and 68 % interval (coverage-recalibrated threshold)
HST_COMBINED = {"mle": 2.51, "low": 2.47, "high": 2.56}
