"""lensinfer: simulation-based inference of dark-matter substructure from strong-lensing images.

Reimplements and extends the analysis of Zhang, Şengül & Dvorkin (2023, MNRAS 527, 4183;
arXiv:2308.09739): a neural likelihood-ratio estimator of the effective density slope γ of
subhalo populations, trained on simulated HST-like images.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
