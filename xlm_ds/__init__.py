"""xlm-ds: cross-lingual LM pretraining (XLM / XLM-R) as a fairseq plugin.

``fairseq-train --user-dir xlm_ds`` imports this package; importing it
registers the tasks, models and criterions below. It changes nothing in
fairseq: the fixes training needs (``fairseq_compat``) are applied by the
tasks' ``setup_task`` and by xlm-ds-train.
"""
from .criterions import xlm_lm_loss  # noqa: F401
from .models import xlm_model  # noqa: F401  (before its architectures)
from .models import architectures, xlm_transformer  # noqa: F401
from .tasks import xlm_task, xlm_translation, umt_task  # noqa: F401
from .tasks import alignment_task, phased_task  # noqa: F401  (docs/methods.md)

__version__ = "0.1.0"
