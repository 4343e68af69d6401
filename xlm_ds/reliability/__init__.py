"""Crash safety of training (docs/reliability.md).

* ``atomic``: checkpoint files written atomically, with a checksummed
  completeness marker, and the newest complete one found
* ``fairseq_checkpoints``: fairseq-train's save/resume through ``atomic``
  (xlm-ds-train's DeepSpeed save directories: ``engine/checkpoint_dir.py``)
* ``nonfinite``: NaN/inf updates skipped and counted, stop after N in a row
* ``prefetch``: fairseq's prefetch thread joined before interpreter exit
* ``preflight``: start-up checks (free disk space for a checkpoint)

The fairseq patches are applied by ``xlm_ds.fairseq_compat`` (training entry points only).
"""
