"""Puts the repository first on sys.path, so the step scripts import its virnuc_core without an
install (Snakemake adds this folder to sys.path when it runs a script through ``script:``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
