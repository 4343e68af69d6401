"""The one exception type of the data pipeline.

Every problem that is the user's input (a missing file, bad bytes, a typo in
a flag) is raised as :class:`PrepareError` with a message that names the
file / flag and line and says what was expected.  The CLI turns it into
``xlm-ds-prepare: error: ...`` and exit status 2, like argparse does, so
that a traceback always means a bug in xlm-ds rather than bad input.
"""


class PrepareError(Exception):
    """Bad input to the data-preparation pipeline (message is user-facing)."""
