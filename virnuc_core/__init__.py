"""virnuc_core: the algorithms, models, file formats and runtime pieces of the virnuc workflow."""

__version__ = "0.1.0"
