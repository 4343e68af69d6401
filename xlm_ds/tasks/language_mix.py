"""How the languages (or pairs) of one objective stream share it: the
probabilities q_i and, from them, how many samples of each language the
stream draws in an epoch (q_i × the epoch's length).

* ``alpha`` (XLM §3.1, XLM-R): q_i ∝ p_i^α with p_i = n_i / Σ n_k, n_i the
  sentences of language i (pairs for TLM), as XLM's ``set_sampling_probs``
  counts them; ``--lang-sampling-unit tokens`` counts tokens instead.
* ``unimax`` (Chung et al. 2023, :mod:`xlm_ds.data.unimax`): the run's
  samples of the stream spread uniformly over its languages, no language
  repeated more than ``--unimax-max-epochs`` times over the run. Sizes and
  budget are the stream's samples: token blocks for MLM/CLM (the paper
  counts characters; blocks are proportional to tokens), pairs for TLM.

UniMax needs the run's length, in epochs: from
``--unimax-budget`` (samples of the stream over the run), or derived from
``--max-update`` × samples per update (``--batch-size`` × ranks ×
``--update-freq``), or ``--max-epoch``. With N shards each is visited by
1/N of the epochs, and each shard's languages are mixed for its share.
"""
import logging
import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

from ..data.alpha_sampling import smoothed_probs
from ..data.unimax import unimax_budgets

logger = logging.getLogger(__name__)

METHODS = ("alpha", "unimax")
UNITS = ("sentences", "tokens")


class LanguageMixError(ValueError):
    pass


def _known(value) -> Optional[float]:
    """An interpolated config value, or None when it is unset or could not
    be resolved (a task config built outside fairseq-train)."""
    if isinstance(value, Sequence) and not isinstance(value, str):  # --update-freq (a ListConfig)
        value = value[0] if len(value) else None
    if value is None or isinstance(value, str):
        return None
    return float(value)


@dataclass(frozen=True)
class RunLength:
    """The run's length as UniMax sees it: ``samples`` of a stream over the
    run, or ``epochs`` (passes over the data), and where that came from."""

    samples: Optional[float] = None
    epochs: Optional[float] = None
    source: str = ""

    def epochs_per_shard(self, epoch_length: int, num_shards: int) -> float:
        """Epochs the run spends on each shard, for epochs of this length."""
        if self.epochs is not None:
            return self.epochs / num_shards
        return self.samples / (epoch_length * num_shards)

    @classmethod
    def from_cfg(cls, cfg) -> "RunLength":
        budget = _known(getattr(cfg, "unimax_budget", 0)) or 0
        if budget > 0:
            return cls(samples=budget, source=f"--unimax-budget {int(budget)}")
        max_update = _known(getattr(cfg, "max_update", None)) or 0
        batch = _known(getattr(cfg, "batch_size", None))
        ranks = _known(getattr(cfg, "distributed_world_size", None)) or 1
        freq = _known(getattr(cfg, "update_freq", None)) or 1
        if max_update > 0 and batch:
            samples = max_update * batch * ranks * freq
            return cls(samples=samples, source=(
                f"--max-update {int(max_update)} × --batch-size {int(batch)} × {int(ranks)} rank(s) × "
                f"--update-freq {int(freq)} = {int(samples)} samples"))
        max_epoch = _known(getattr(cfg, "max_epoch", None)) or 0
        if max_epoch > 0 and max_update <= 0:
            return cls(epochs=max_epoch, source=f"--max-epoch {int(max_epoch)}")
        raise LanguageMixError(
            "--lang-sampling unimax spreads the run's samples over the languages and needs the run's "
            "length: give --max-update with --batch-size, or --max-epoch, or --unimax-budget "
            "(samples of each objective stream over the whole run)"
        )


@dataclass(frozen=True)
class LanguageMix:
    method: str = "alpha"
    alpha: float = 0.7
    unit: str = "sentences"
    unimax_max_epochs: float = 1.0
    run: Optional[RunLength] = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise LanguageMixError(f"--lang-sampling {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.unit not in UNITS:
            raise LanguageMixError(f"--lang-sampling-unit {self.unit!r}; expected one of {', '.join(UNITS)}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise LanguageMixError(f"--lang-sampling-alpha {self.alpha}; expected a finite number >= 0")
        if not (math.isfinite(self.unimax_max_epochs) and self.unimax_max_epochs > 0):
            raise LanguageMixError(f"--unimax-max-epochs {self.unimax_max_epochs}; expected a number > 0")

    @classmethod
    def from_cfg(cls, cfg) -> "LanguageMix":
        method = str(cfg.lang_sampling)
        run = RunLength.from_cfg(cfg) if method == "unimax" else None
        return cls(method, float(cfg.lang_sampling_alpha), str(cfg.lang_sampling_unit),
                   float(cfg.unimax_max_epochs), run)

    def probabilities(
        self,
        stream: str,
        sentences: Mapping[str, int],
        tokens: Mapping[str, int],
        samples: Mapping[str, int],
        length: int,
        num_shards: int = 1,
    ) -> Dict[str, float]:
        """q per key of one stream of ``length`` samples per epoch;
        ``samples`` = each key's samples (blocks or pairs). Logs the
        distribution and its inputs."""
        if self.method == "alpha":
            counts = sentences if self.unit == "sentences" else tokens
            probs = smoothed_probs(counts, self.alpha)
            logger.info("%s: language sampling alpha=%g over %s (%s): %s", stream, self.alpha, self.unit,
                        _fmt(counts, "d"), _fmt(probs, ".3f"))
            return probs
        epochs = self.run.epochs_per_shard(length, num_shards)
        budget = epochs * length
        budgets = unimax_budgets(samples, budget, self.unimax_max_epochs)
        spent = sum(budgets.values())
        probs = {k: b / spent for k, b in budgets.items()}
        logger.info(
            "%s: UniMax (at most %g passes per language) over %d samples per epoch, run budget %s "
            "-> %.2f epochs: %s", stream, self.unimax_max_epochs, length, self.run.source,
            epochs, _fmt(probs, ".3f"))
        if spent < budget * (1 - 1e-9):
            logger.warning(
                "%s: every language reaches --unimax-max-epochs %g before the run's budget is spent; "
                "the run's %.0f samples repeat the languages in their natural proportions", stream,
                self.unimax_max_epochs, budget)
        return probs


def resampled_sizes(probs: Mapping[str, float], samples: Mapping[str, int], length: int) -> Dict[str, float]:
    """Each key's share q × ``length`` (the stream's samples per epoch) as a
    ratio to its own size: the ``size_ratio`` of fairseq's ResamplingDataset."""
    return {k: probs[k] * length / samples[k] for k in samples}


def _fmt(values: Mapping[str, float], spec: str) -> str:
    return ", ".join(f"{k} {v:{spec}}" for k, v in values.items())
