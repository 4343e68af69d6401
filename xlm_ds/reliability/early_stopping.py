"""``--patience`` that survives a resume.

fairseq-train counts validations without improvement in attributes of a
function (``fairseq_cli.train.should_stop_early.best`` / ``.num_runs``;
xlm-ds-train's loop has the same) and saves neither in its checkpoints. A
run stopped and resumed therefore took its first validation after the
resume as the best and counted its patience from there: it trained on
longer than the same run uninterrupted, and two systems of one comparison
(the reproductions' "until validation stops improving") stopped by
different rules when only one of them had been resumed. The counter goes
into the checkpoint's ``extra_state["early_stopping"]`` and comes back on
resume, under the conditions on which fairseq restores ``best``.
"""
import sys
from typing import Any, Callable, Dict, Optional

KEY = "early_stopping"


def state_of(counter: Optional[Callable]) -> Optional[Dict[str, Any]]:
    """The counter's state, None before the first validation."""
    if counter is None or getattr(counter, "best", None) is None:
        return None
    return {"best": float(counter.best), "num_runs": int(getattr(counter, "num_runs", 0))}


def restore(counter: Optional[Callable], extra_state: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Gives the counter its saved state back and returns it; None when the
    checkpoint holds none (written before this, or before the first
    validation)."""
    saved = (extra_state or {}).get(KEY)
    if counter is None or not saved:
        return None
    counter.best = saved["best"]
    counter.num_runs = saved["num_runs"]
    return saved


def fairseq_train_counter() -> Optional[Callable]:
    """fairseq-train's counter when fairseq-train is what runs (its module
    is loaded); None in xlm-ds-train or an inference tool."""
    module = sys.modules.get("fairseq_cli.train")
    return getattr(module, "should_stop_early", None)
