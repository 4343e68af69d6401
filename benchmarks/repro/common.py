"""Shared machinery of the miniature reproductions (benchmarks/repro/exp*.py).

Every experiment is a list of *steps*; each step is one subprocess running a
project CLI or fairseq (xlm-ds-prepare, fairseq-train/-generate/-validate,
xlm-ds-score/-retrieval/-classify) and leaves a small result JSON. A step
whose result JSON exists is skipped, and one that another process on the
same output directory is running is waited for, so an interrupted script resumes where
it stopped (fairseq-train itself resumes from ``checkpoint_last.pt``). Every
file is written to a temporary name and renamed, so a step is either
complete or absent.

Nothing here trains or evaluates by itself: the numbers come from the CLIs.
Pure helpers (``mean_std``, ``Steps``, ``write_json``) import no torch and
no matplotlib, so tests/benchmarks/test_repro_common.py runs in a second.

This module only hands on what an experiment needs (``import common as C``):
steps.py (the runner, seed statistics, JSON), corpora.py (the shared
corpora), commands.py (one wrapper per CLI), report.py (command line,
tables, plots) and setups.py (the en/de/fr set-up of experiments 2, 4, 5).
"""
import os
import sys

# the modules below, beside this file (also when it is loaded by path)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from commands import *  # noqa: E402,F401,F403
from commands import _train_summary  # noqa: E402,F401
from corpora import *  # noqa: E402,F401,F403
from report import *  # noqa: E402,F401,F403
from setups import *  # noqa: E402,F401,F403
from steps import *  # noqa: E402,F401,F403
from steps import _same_command  # noqa: E402,F401
