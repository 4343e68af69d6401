"""Command-line entry points of xlm-ds (console scripts in pyproject.toml)."""
