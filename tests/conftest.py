"""Shared test set-up: one thread per process (2-core machines; torch's
default oversubscribes and made fairseq 10x slower) and registration of the
xlm_ds plugin."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import xlm_ds  # noqa: E402,F401  (registers tasks, models, criterions)
