"""The ``xlm`` task: cross-lingual LM pretraining with MLM, CLM and TLM
objectives mixed in one run (Lample & Conneau 2019).

Each objective is one stream of batches; languages inside a stream are
resampled every epoch (q_i ∝ p_i^α, or UniMax: ``language_mix.py``) so
low-resource languages are seen more often than their share of the data.
Masks, shuffles and draws are functions of (seed, stream, epoch, draw): every
epoch is new, and a resumed run rebuilds exactly the samples it would have
seen. ``DATA=d0:d1`` trains epoch e on shard (e-1) mod N (``data_shards.py``).
One update runs a batch of every objective and averages each objective's
loss over its own predicted tokens (as XLM does), so a CLM batch that
predicts every token does not outweigh an MLM batch that predicts 15%.
"""
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
from fairseq.data import Dictionary
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import FairseqTask, register_task
from omegaconf import II, MISSING, open_dict

from .. import fairseq_compat
from ..data.epoch_streams import EpochZipDatasets, StreamConcat, StreamResampling
from ..data.masking import MaskingConfig, frequency_weights
from ..data.objective_dataset import stream_seed
from ..data.stream_datasets import CausalStreamDataset, MaskedStreamDataset, token_blocks
from ..data.tlm_dataset import TLMPairDataset
from .autocast import autocast_bf16_field, bf16_autocast
from .data_shards import DataShards
from .language_mix import METHODS, UNITS, LanguageMix, resampled_sizes
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
    lang_sampling: ChoiceEnum(METHODS) = field(
        default="alpha",
        metadata={"help": "how the languages of an objective share its batches: alpha (q_i ∝ p_i^alpha, "
                  "XLM) or unimax (uniform over languages, capped at --unimax-max-epochs; Chung et al. 2023)"},
    )
    lang_sampling_alpha: float = field(
        default=0.7, metadata={"help": "q_i ∝ p_i^alpha language sampling in training batches"}
    )
    lang_sampling_unit: ChoiceEnum(UNITS) = field(
        default="sentences",
        metadata={"help": "what p_i counts for alpha sampling: sentences (pairs for TLM; XLM's "
                  "set_sampling_probs) or tokens"},
    )
    unimax_max_epochs: float = field(
        default=1.0, metadata={"help": "UniMax: at most this many passes over a language's data in the run"}
    )
    unimax_budget: int = field(
        default=0,
        metadata={"help": "UniMax: samples of each objective stream over the whole run; 0 = --max-update "
                  "× --batch-size × ranks × --update-freq (or --max-epoch passes)"},
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
    autocast_bf16: bool = autocast_bf16_field()
    max_nonfinite_updates: int = field(
        default=5,
        metadata={
            "help": "skip an update whose loss/gradient is NaN/inf (no optimizer step) and stop "
            "after this many such updates in a row; 0 = stop at the first (fairseq's behaviour)"
        },
    )
    seed: int = II("common.seed")
    # the run's length, for UniMax's budget
    max_update: int = II("optimization.max_update")
    max_epoch: int = II("optimization.max_epoch")
    batch_size: Optional[int] = II("dataset.batch_size")
    update_freq: List[int] = II("optimization.update_freq")
    distributed_world_size: int = II("distributed_training.distributed_world_size")


@register_task("xlm", dataclass=XLMTaskConfig)
class XLMTask(FairseqTask):
    cfg: XLMTaskConfig

    def __init__(self, cfg: XLMTaskConfig, shards: DataShards, dictionary: Dictionary):
        super().__init__(cfg)
        self.shards = shards
        self.dictionary = dictionary
        self.mask_idx = dictionary.index("<mask>")
        self.languages = shards.languages
        self.lang2id = {lang: i for i, lang in enumerate(self.languages)}
        self.objectives = parse_objectives(cfg.objectives, shards.mono_languages, shards.pairs)
        self.mix = LanguageMix.from_cfg(cfg)
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
        fairseq_compat.apply()  # fairseq-train/-generate's first call into the plugin
        shards = DataShards.from_data_arg(cfg.data)
        dictionary = shards.load_dictionary()
        logger.info(
            "dictionary: %d types; languages: %s; %d shard(s)", len(dictionary), ", ".join(shards.languages),
            len(shards),
        )
        task = cls(cfg, shards, dictionary)
        shards.warn_missing("train", task.stream_keys())
        return task

    def rank_state_dict(self):
        """State that differs between data-parallel ranks (xlm-ds-train
        saves it per rank); none here."""
        return {}

    def load_rank_state_dict(self, state):
        pass

    def stream_keys(self) -> List[str]:
        """Every language/pair the objectives read (for the shard warnings)."""
        return sorted({key for obj in self.stream_objectives() for key in obj.keys})

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
    def _raw(self, data, split, kind, key):
        """The binarized datasets a stream reads: one (mono) or two (pair sides)."""
        names = [f"{key}.{side}" for side in key.split("-")] if kind == "tlm" else [key]
        return [data.load(split, name, self.dictionary) for name in names]

    def _objective_dataset(self, kind, key, raw):
        d = self.dictionary
        seed = stream_seed(self.cfg.seed, f"{kind}:{key}")
        if kind == "tlm":
            src, tgt = key.split("-")
            return TLMPairDataset(
                raw[0], raw[1], self.lang2id[src], self.lang2id[tgt], d.bos(),
                self.masking, self.cfg.tokens_per_sample, seed, self.token_weights,
            )
        if kind == "mlm":
            blocks = token_blocks(raw[0], self.cfg.tokens_per_sample - 1, d.pad(), d.eos())
            return MaskedStreamDataset(
                blocks, self.lang2id[key], d.bos(), self.masking, seed, self.token_weights
            )
        blocks = token_blocks(raw[0], self.cfg.tokens_per_sample, d.pad(), d.eos())
        return CausalStreamDataset(blocks, self.lang2id[key], d.bos(), d.pad(), seed)

    def _resample(self, kind, streams, raws, epoch, length):
        """Each language's share q_i of a stream of ``length`` samples, drawn
        afresh every epoch (StreamResampling: with replacement)."""
        samples = {k: len(ds) for k, ds in streams.items()}
        probs = self.mix.probabilities(
            kind,
            sentences={k: len(raw[0]) for k, raw in raws.items()},
            tokens={k: int(sum(int(r.sizes.sum()) for r in raw)) for k, raw in raws.items()},
            samples=samples,
            length=length,
            num_shards=len(self.shards),
        )
        ratios = resampled_sizes(probs, samples, length)
        return [
            StreamResampling(ds, size_ratio=ratios[k], seed=stream_seed(self.cfg.seed, f"resample:{kind}:{k}"),
                             epoch=epoch)
            for k, ds in streams.items()
            if ratios[k] > 0
        ]

    # what load_dataset zips; xlm_phased and xlm_align change these
    def stream_objectives(self):
        return self.objectives

    def stream_name(self, obj):
        return obj.kind

    def extra_streams(self, data, split, epoch):
        return OrderedDict()

    def has_sharded_data(self, split):
        # fairseq looks for os.pathsep in DATA; a sharded xlm-ds-prepare
        # directory has none, yet its epochs must reload (each its shard)
        return len(self.shards) > 1 or super().has_sharded_data(split)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        """One stream per objective (and the extra ones), zipped: an update
        takes one batch of each. The epoch is as long as the longest stream;
        a resampled stream draws that many samples (rather than wrapping
        around a shorter set of draws), so every sample of an epoch is a
        fresh draw; an unresampled shorter stream wraps around its data."""
        train = split.startswith("train")
        data = self.shards.for_split(split, epoch, train)
        extra = self.extra_streams(data, split, epoch)
        built = OrderedDict()
        for obj in self.stream_objectives():
            raws = OrderedDict(
                (key, self._raw(data, split, obj.kind, key)) for key in obj.keys if data.has(split, key)
            )
            per_key = OrderedDict((k, self._objective_dataset(obj.kind, k, raw)) for k, raw in raws.items())
            per_key = OrderedDict((k, ds) for k, ds in per_key.items() if len(ds) > 0)
            if per_key:
                built[obj] = (per_key, raws)
            elif not (train and len(self.shards) > 1):  # a shard without it: warned at start-up
                logger.warning("no %s data for %s in split %s", obj.kind, ",".join(obj.keys), split)
        if not built and not extra:
            raise FileNotFoundError(
                f"split {split!r}: no data in {data.path} for any objective of the task "
                f"({' '.join(self.stream_name(o) for o in self.stream_objectives())})"
            )
        length = max([len(ds) for ds in extra.values()]
                     + [sum(len(ds) for ds in per_key.values()) for per_key, _ in built.values()])
        streams = OrderedDict()
        for obj, (per_key, raws) in built.items():
            parts = list(per_key.values())
            if train and len(parts) > 1:
                parts = self._resample(obj.kind, per_key, raws, epoch, length)
            streams[self.stream_name(obj)] = parts[0] if len(parts) == 1 else StreamConcat(parts)
        streams.update(extra)
        self.datasets[split] = EpochZipDatasets(streams)
        self.datasets[split].set_epoch(epoch)

    def filter_indices_by_size(self, indices, dataset, max_positions=None, ignore_invalid_inputs=False):
        # Samples are cut to --tokens-per-sample when built, and build_model
        # checks that against the model; nothing is ever too long.
        return indices

    # ---- steps ------------------------------------------------------------
    def _autocast(self):
        return bf16_autocast(self.cfg.autocast_bf16)

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

    def log_of_objectives(self, entries):
        """The logging output of one batch from its objectives'
        ``(objective, predicted positions, criterion log)``."""
        log = self._empty_log()
        for obj, n_pred, sub_log in entries:
            self._merge(log, sub_log, obj.weight, int(n_pred))
        self._finish(log)
        return log

    @staticmethod
    def objective_loss(obj, loss, n_pred):
        """What the gradient is taken of: the objective's per-token mean,
        weighted."""
        return loss * (obj.weight / max(int(n_pred), 1))

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        # one autocast region for every objective: autocast's cast of each
        # weight to bf16 is cached inside a region, so it happens once per
        # update instead of once per objective
        with self._autocast():
            total, entries = self._train_objectives(sample, model, criterion, optimizer, ignore_grad)
        # every objective's loss is already a per-token mean: normalise by 1
        return total, 1, self.log_of_objectives(entries)

    def _train_objectives(self, sample, model, criterion, optimizer, ignore_grad):
        total, entries = 0.0, []
        for obj in self.objectives:
            sub = sample.get(obj.kind) if sample else None
            if not sub:
                continue
            with torch.autograd.profiler.record_function(f"forward_{obj.kind}"):
                loss, n_pred, sub_log = criterion(model, sub)
            scaled = self.objective_loss(obj, loss, n_pred)
            if ignore_grad:
                scaled = scaled * 0
            with torch.autograd.profiler.record_function(f"backward_{obj.kind}"):
                optimizer.backward(scaled)
            total += float(scaled.detach())
            entries.append((obj, n_pred, sub_log))
        return total, entries

    def valid_step(self, sample, model, criterion):
        model.eval()
        entries = []
        with torch.no_grad():
            for obj in self.objectives:
                sub = sample.get(obj.kind) if sample else None
                if not sub:
                    continue
                with self._autocast():
                    loss, n_pred, sub_log = criterion(model, sub)
                entries.append((obj, n_pred, sub_log))
        log = self.log_of_objectives(entries)
        return log["loss"], 1, log
