"""The ``xlm`` task: cross-lingual LM pretraining with MLM, CLM and TLM
objectives mixed in one run (Lample & Conneau 2019).

Each objective is one stream of batches; languages inside a stream are
resampled each epoch with q_i ∝ p_i^α (``--lang-sampling-alpha``) so
low-resource languages are seen more often than their share of the data.
One update runs a batch of every objective and averages each objective's
loss over its own predicted tokens (as XLM does), so a CLM batch that
predicts every token does not outweigh an MLM batch that predicts 15%.
"""
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from fairseq.data import (
    ConcatDataset,
    Dictionary,
    ResamplingDataset,
    RoundRobinZipDatasets,
    data_utils,
)
from fairseq.dataclass import FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING, open_dict

from ..data.alpha_sampling import smoothed_probs
from ..data.masking import MaskingConfig, frequency_weights
from ..data.stream_datasets import CausalStreamDataset, MaskedStreamDataset, token_blocks
from ..data.tlm_dataset import TLMPairDataset
from .data_directory import DataDirectory
from .objectives import parse_objectives

logger = logging.getLogger(__name__)


@dataclass
class XLMTaskConfig(FairseqDataclass):
    data: str = field(default=MISSING, metadata={"help": "directory written by xlm-ds-prepare"})
    objectives: str = field(
        default="mlm",
        metadata={
            "help": "space-separated OBJECTIVE[:LANGS][@WEIGHT], e.g. "
            "'mlm:en,de,fr tlm:de-en,fr-en@0.5 clm:en'; bare 'mlm'/'clm' = all "
            "monolingual languages, bare 'tlm' = all pairs"
        },
    )
    lang_sampling_alpha: float = field(
        default=0.7, metadata={"help": "q_i ∝ p_i^alpha language sampling in training batches"}
    )
    tokens_per_sample: int = field(
        default=256, metadata={"help": "stream length for MLM/CLM; token budget of a TLM pair"}
    )
    mask_prob: float = field(default=0.15, metadata={"help": "share of tokens predicted (MLM/TLM)"})
    leave_unmasked_prob: float = field(default=0.1, metadata={"help": "of those, kept unchanged"})
    random_token_prob: float = field(default=0.1, metadata={"help": "of those, replaced at random"})
    mask_sample_alpha: float = field(
        default=0.0,
        metadata={"help": "choose masked tokens ∝ count^-alpha (XLM sample_alpha); 0 = uniform"},
    )
    autocast_bf16: bool = field(
        default=False,
        metadata={
            "help": "run forward/backward under torch.autocast(bfloat16) with fp32 weights "
            "and optimizer (works on CPU, where fairseq's --bf16 does not)"
        },
    )
    max_nonfinite_updates: int = field(
        default=5,
        metadata={
            "help": "skip an update whose loss/gradient is NaN/inf (no optimizer step) and stop "
            "after this many such updates in a row; 0 = stop at the first (fairseq's behaviour)"
        },
    )
    seed: int = II("common.seed")


@register_task("xlm", dataclass=XLMTaskConfig)
class XLMTask(FairseqTask):
    cfg: XLMTaskConfig

    def __init__(self, cfg: XLMTaskConfig, data: DataDirectory, dictionary: Dictionary):
        super().__init__(cfg)
        self.data = data
        self.dictionary = dictionary
        self.mask_idx = dictionary.index("<mask>")
        self.languages = data.languages
        self.lang2id = {lang: i for i, lang in enumerate(self.languages)}
        self.objectives = parse_objectives(cfg.objectives, data.mono_languages, data.pairs)
        self.state.merge_state_dict(
            {"dictionary_symbols": list(dictionary.symbols), "languages": list(self.languages)}
        )
        self.masking = MaskingConfig(
            mask_idx=self.mask_idx,
            pad_idx=dictionary.pad(),
            vocab_size=len(dictionary),
            first_normal_idx=dictionary.nspecial,
            mask_prob=cfg.mask_prob,
            leave_unmasked_prob=cfg.leave_unmasked_prob,
            random_token_prob=cfg.random_token_prob,
        )
        self.token_weights = None
        if cfg.mask_sample_alpha > 0:
            counts = np.asarray(dictionary.count, dtype=np.float64)
            specials = range(dictionary.nspecial)
            self.token_weights = frequency_weights(counts, cfg.mask_sample_alpha, specials)

    @classmethod
    def setup_task(cls, cfg: XLMTaskConfig, **kwargs):
        data = DataDirectory(cfg.data.split(os.pathsep)[0])
        dictionary = data.load_dictionary()
        logger.info(
            "dictionary: %d types; languages: %s", len(dictionary), ", ".join(data.languages)
        )
        return cls(cfg, data, dictionary)

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def max_positions(self):
        return self.cfg.tokens_per_sample

    def build_model(self, cfg, from_checkpoint=False):
        if not getattr(cfg, "languages", None):
            # recorded in the run's config (saved in every checkpoint) so the
            # model's language ids are readable without this data directory
            with open_dict(cfg):
                cfg.languages = ",".join(self.languages)
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.tokens_per_sample > model.max_positions():
            raise ValueError(
                f"--tokens-per-sample {self.cfg.tokens_per_sample} exceeds the model's "
                f"--max-positions {model.max_positions()}"
            )
        return model

    # ---- data -------------------------------------------------------------
    def _objective_dataset(self, kind, key, split, epoch):
        d = self.dictionary
        seed = self.cfg.seed
        if kind == "tlm":
            src, tgt = key.split("-")
            src_ds = self.data.load(split, f"{key}.{src}", d)
            tgt_ds = self.data.load(split, f"{key}.{tgt}", d)
            return TLMPairDataset(
                src_ds, tgt_ds, self.lang2id[src], self.lang2id[tgt], d.bos(),
                self.masking, self.cfg.tokens_per_sample, seed, self.token_weights,
            )
        mono = self.data.load(split, key, d)
        if kind == "mlm":
            blocks = token_blocks(mono, self.cfg.tokens_per_sample - 1, d.pad(), d.eos())
            return MaskedStreamDataset(
                blocks, self.lang2id[key], d.bos(), self.masking, seed, self.token_weights
            )
        blocks = token_blocks(mono, self.cfg.tokens_per_sample, d.pad(), d.eos())
        return CausalStreamDataset(blocks, self.lang2id[key], d.bos(), d.pad(), seed)

    def _resample(self, datasets, epoch):
        """Upsample/downsample each language to its share q_i of the stream."""
        sizes = {k: len(ds) for k, ds in datasets.items()}
        probs = smoothed_probs(sizes, self.cfg.lang_sampling_alpha)
        total = sum(sizes.values())
        logger.info(
            "language sampling (alpha=%g): %s", self.cfg.lang_sampling_alpha,
            ", ".join(f"{k} {p:.3f}" for k, p in probs.items()),
        )
        return [
            ResamplingDataset(
                ds, replace=True, size_ratio=probs[k] * total / len(ds),
                seed=self.cfg.seed, epoch=epoch,
            )
            for k, ds in datasets.items()
        ]

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        streams = OrderedDict()
        for obj in self.objectives:
            per_key = OrderedDict(
                (key, self._objective_dataset(obj.kind, key, split, epoch))
                for key in obj.keys
                if self.data.has(split, obj.kind, key)
            )
            per_key = OrderedDict((k, ds) for k, ds in per_key.items() if len(ds) > 0)
            if not per_key:
                logger.warning("no %s data for %s in split %s", obj.kind, ",".join(obj.keys), split)
                continue
            parts = list(per_key.values())
            if split.startswith("train") and len(parts) > 1:
                parts = self._resample(per_key, epoch)
            streams[obj.kind] = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        if not streams:
            raise FileNotFoundError(
                f"split {split!r}: no data in {self.data.path} for any objective of "
                f"--objectives {self.cfg.objectives!r}"
            )
        self.datasets[split] = RoundRobinZipDatasets(streams)

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        # Samples are cut to --tokens-per-sample when built, and build_model
        # checks that against the model; nothing is ever too long.
        return indices

    # ---- steps ------------------------------------------------------------
    def _autocast(self):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.cfg.autocast_bf16)

    def _empty_log(self):
        log = {"loss": 0.0, "ntokens": 0, "nsentences": 0, "sample_size": 1}
        for obj in self.objectives:
            log[f"{obj.kind}_loss"] = 0.0
            log[f"{obj.kind}_n"] = 0
            for lang in obj.languages():
                log[f"{obj.kind}_{lang}_loss"] = 0.0
                log[f"{obj.kind}_{lang}_n"] = 0
        return log

    def _merge(self, log, sub_log, weight, n_pred):
        for key, value in sub_log.items():
            if key in ("loss", "sample_size"):
                continue
            log[key] = log.get(key, 0) + value
        log["loss"] += weight * float(sub_log["loss"]) / max(n_pred, 1)

    def _finish(self, log):
        """The logged ``loss`` is the weighted *average* of the objectives'
        per-token losses (the gradient is of their weighted sum), so ``ppl``
        stays a perplexity."""
        weight = sum(o.weight for o in self.objectives if log.get(f"{o.kind}_n", 0) > 0)
        if weight > 0:
            log["loss"] /= weight

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        log = self._empty_log()
        total = 0.0
        for obj in self.objectives:
            sub = sample.get(obj.kind) if sample else None
            if not sub:
                continue
            with torch.autograd.profiler.record_function(f"forward_{obj.kind}"), self._autocast():
                loss, n_pred, sub_log = criterion(model, sub)
            scaled = loss * (obj.weight / max(int(n_pred), 1))
            if ignore_grad:
                scaled = scaled * 0
            with torch.autograd.profiler.record_function(f"backward_{obj.kind}"):
                optimizer.backward(scaled)
            total += float(scaled.detach())
            self._merge(log, sub_log, obj.weight, int(n_pred))
        self._finish(log)
        # every objective's loss is already a per-token mean: normalise by 1
        return total, 1, log

    def valid_step(self, sample, model, criterion):
        model.eval()
        log = self._empty_log()
        with torch.no_grad():
            for obj in self.objectives:
                sub = sample.get(obj.kind) if sample else None
                if not sub:
                    continue
                with self._autocast():
                    loss, n_pred, sub_log = criterion(model, sub)
                self._merge(log, sub_log, obj.weight, int(n_pred))
        self._finish(log)
        return log["loss"], 1, log
