"""Fixtures of the xlm-ds-prepare tests (the test suite runs with
--import-mode=importlib, so helpers are shared as fixtures, not imports)."""
import gzip
import os

import pytest

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "xlm_ds", "sample_corpus")


def _sample_lines(name, n=None):
    with gzip.open(os.path.join(SAMPLE, name), "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    return lines[:n] if n else lines


def _leftovers(out):
    """Anything named like the output or its temp directories."""
    parent = os.path.dirname(os.path.abspath(out))
    base = os.path.basename(os.path.abspath(out))
    return sorted(n for n in os.listdir(parent) if n == base or n.startswith(base + "."))


@pytest.fixture(scope="session")
def sample_dir():
    return os.path.abspath(SAMPLE)


@pytest.fixture(scope="session")
def sample_lines():
    """``sample_lines(file_name, n=None)``: lines of a shipped sample file."""
    return _sample_lines


@pytest.fixture(scope="session")
def leftovers():
    """``leftovers(out)``: ``out`` and ``out.*`` siblings that exist."""
    return _leftovers


@pytest.fixture
def tiny(tmp_path):
    """Small real de/en files: 200 parallel lines + 150 mono en + 50 valid."""
    d = tmp_path / "in"
    d.mkdir()
    files = {
        "train.de": _sample_lines("train.de-en.de.gz", 200),
        "train.en": _sample_lines("train.de-en.en.gz", 200),
        "mono.en": _sample_lines("train.en.gz", 150),
        "valid.en": _sample_lines("valid.en.gz", 50),
    }
    for name, lines in files.items():
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d
