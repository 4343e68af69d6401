"""``xlm_umt``: unsupervised MT between two languages from their monolingual
data only (XLM §4.3, following Lample et al. 2018): a translation model
initialised from a pretrained XLM is trained with

* denoising auto-encoding (``ae``): reconstruct a sentence of language L from
  a noisy copy (tokens shuffled within ``--word-shuffle`` positions, dropped
  with ``--word-dropout``, blanked with ``--word-blank``), encoder and decoder
  both tagged L;
* online back-translation (``bt``): translate a sentence of L into the other
  language M with the current model (greedy, no gradient), then learn to
  translate that output back to the original sentence (M -> L).

Each term is weighted by a schedule of the update number (``--lambda-ae``,
``--lambda-bt``: ``"1"`` or ``"0:0,1000:1"`` as in XLM's ``lambda_ae``),
parsed by fairseq's own ``PiecewiseLinearFn``; noise comes from fairseq's
``NoisingDataset`` (token level, as XLM noises BPE tokens) and generation
from fairseq's ``SequenceGenerator``. fairseq's ``online_backtranslation``
task marks languages with ``__xx__`` tokens added to the dictionary, which
would break the dictionary shared with pretraining; here the language is
the model's language embedding, switched per sub-batch with
``model.set_languages``.

Validation and ``fairseq-generate`` use the ``--source-lang`` ->
``--target-lang`` pair; the checkpoint loads in ``xlm_translation`` for
either direction.
"""
import logging
import math
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field

import torch
from fairseq.data import LanguagePairDataset, NoisingDataset, RoundRobinZipDatasets, data_utils
from fairseq.logging import metrics
from fairseq.sequence_generator import SequenceGenerator
from fairseq.tasks import register_task
from fairseq.tasks.online_backtranslation import PiecewiseLinearFn
from omegaconf import II

from .autocast import bf16_autocast
from .data_shards import DataShards
from .xlm_translation import XLMTranslationConfig, XLMTranslationTask

logger = logging.getLogger(__name__)

KINDS = ("ae", "bt")


@dataclass
class UMTConfig(XLMTranslationConfig):
    lambda_ae: str = field(default="1", metadata={
        "help": "weight of denoising auto-encoding: a constant or a schedule "
                "'update:value,update:value' (linear in between)"})
    lambda_bt: str = field(default="1", metadata={
        "help": "weight of online back-translation, same format (e.g. '0:0,1000:1' "
                "starts it after 1000 updates of auto-encoding)"})
    word_shuffle: float = field(default=3.0, metadata={
        "help": "auto-encoding noise: maximum distance a token moves"})
    word_dropout: float = field(default=0.1, metadata={
        "help": "auto-encoding noise: probability of dropping a token"})
    word_blank: float = field(default=0.1, metadata={
        "help": "auto-encoding noise: probability of replacing a token by <unk>"})
    bt_max_len_a: float = field(default=1.3, metadata={
        "help": "back-translation length limit: a * source length + b"})
    bt_max_len_b: int = field(default=5, metadata={"help": "see --bt-max-len-a"})
    seed: int = II("common.seed")


@register_task("xlm_umt", dataclass=UMTConfig)
class XLMUnsupervisedMTTask(XLMTranslationTask):
    def __init__(self, cfg, src_dict, tgt_dict, languages):
        super().__init__(cfg, src_dict, tgt_dict, languages)
        self.lambdas = {
            "ae": _schedule(cfg.lambda_ae, "--lambda-ae"),
            "bt": _schedule(cfg.lambda_bt, "--lambda-bt"),
        }
        self.mono_langs = [cfg.source_lang, cfg.target_lang]
        self._bt_generator = None

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        task = super().setup_task(cfg, **kwargs)
        task.shards = DataShards.from_data_arg(cfg.data)
        for i, data in enumerate(task.shards.dirs):
            missing = [lang for lang in task.mono_langs if not data.has("train", lang)]
            if missing:
                raise ValueError(
                    f"{data.path}: no monolingual training data for {', '.join(missing)} "
                    f"(manifest.json lists {', '.join(data.mono_languages) or 'none'}); "
                    "unsupervised MT needs train.<lang> for both languages (xlm-ds-prepare --mono)"
                    + (f" in every shard (this is shard {i})" if len(task.shards) > 1 else "")
                )
        return task

    def other_language(self, lang: str) -> str:
        src, tgt = self.mono_langs
        return tgt if lang == src else src

    # -- data -------------------------------------------------------------

    def has_sharded_data(self, split):
        # reloads the training set every epoch (from the epoch's shard), so
        # auto-encoding noise is drawn afresh each epoch, seeded by
        # (seed, epoch, index), rather than fixed per sentence
        return split == self.cfg.train_subset

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        if split != self.cfg.train_subset:
            return super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        data = self.shards.for_split(split, epoch, train=True)
        parts = OrderedDict()
        for lang in self.mono_langs:
            clean = data.load(split, lang, self.src_dict)
            noisy = NoisingDataset(
                clean, self.src_dict, seed=self.cfg.seed + epoch * len(clean),
                max_word_shuffle_distance=self.cfg.word_shuffle,
                word_dropout_prob=self.cfg.word_dropout,
                word_blanking_prob=self.cfg.word_blank,
            )
            parts[f"ae:{lang}"] = self._pairs(noisy, clean)
            # source = target = the sentence; back_translate replaces the source
            parts[f"bt:{lang}"] = self._pairs(clean, clean)
        self.datasets[split] = RoundRobinZipDatasets(parts)
        return self.datasets[split]

    def _pairs(self, src, tgt):
        return LanguagePairDataset(
            src, src.sizes, self.src_dict, tgt, tgt.sizes, self.tgt_dict,
            left_pad_source=self.cfg.left_pad_source, left_pad_target=self.cfg.left_pad_target,
        )

    # -- model ------------------------------------------------------------

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if getattr(model.args, "no_lang_embeddings", False):
            raise ValueError(
                "xlm_umt tells the decoder which language to write through the language "
                "embeddings; this model has none (--no-lang-embeddings or an XLM-R-style "
                "checkpoint)"
            )
        self._bt_generator = SequenceGenerator(
            [model], self.tgt_dict, beam_size=1, max_len_a=self.cfg.bt_max_len_a,
            max_len_b=self.cfg.bt_max_len_b, max_len=model.max_decoder_positions() - 1,
        )
        return model

    # -- steps ------------------------------------------------------------

    def back_translate(self, sample, model, lang: str, other: str):
        """Greedy translation lang -> other of the sample's sources, returned
        as a new sample whose source is that translation and whose target
        is still the original sentence."""
        was_training = model.training
        model.eval()
        model.set_languages(lang, other)
        with torch.no_grad():
            hypos = self._bt_generator.generate(
                [model], {"net_input": {k: sample["net_input"][k] for k in ("src_tokens", "src_lengths")}}
            )
        model.train(was_training)
        tokens = [h[0]["tokens"] for h in hypos]
        src = data_utils.collate_tokens(
            tokens, self.src_dict.pad(), self.src_dict.eos(), left_pad=self.cfg.left_pad_source
        )
        out = dict(sample)
        out["net_input"] = dict(sample["net_input"])
        out["net_input"]["src_tokens"] = src.to(sample["net_input"]["src_tokens"].device)
        out["net_input"]["src_lengths"] = torch.tensor(
            [t.numel() for t in tokens], device=src.device
        )
        return out

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        total_loss, total_size = 0.0, 0
        log = defaultdict(float)
        for key, sub in sample.items():
            if not sub or "net_input" not in sub:
                continue
            kind, lang = key.split(":")
            weight = self.lambdas[kind](update_num)
            log[f"lambda_{kind}"] = weight
            if weight == 0:
                continue
            src_lang = lang
            if kind == "bt":
                src_lang = self.other_language(lang)
                sub = self.back_translate(sub, model, lang, src_lang)
            model.set_languages(src_lang, lang)
            with bf16_autocast(self.cfg.autocast_bf16):
                loss, sample_size, sub_log = criterion(model, sub)
            loss = loss * weight
            if ignore_grad:
                loss = loss * 0
            optimizer.backward(loss)
            total_loss += float(loss.detach())
            total_size += sample_size
            for k, v in sub_log.items():
                log[k] += v
                log[f"{kind}_{lang}_{k}"] += v
        log["loss"] = total_loss
        log["sample_size"] = total_size
        return total_loss, total_size, dict(log)

    def valid_step(self, sample, model, criterion):
        model.set_languages(self.cfg.source_lang, self.cfg.target_lang)
        return super().valid_step(sample, model, criterion)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        for m in models:
            m.set_languages(self.cfg.source_lang, self.cfg.target_lang)
        return super().inference_step(generator, models, sample, prefix_tokens, constraints)

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        for kind in KINDS:
            for lang in self.mono_langs:
                p = f"{kind}_{lang}_"
                size = sum(x.get(p + "sample_size", 0) for x in logging_outputs)
                if size:
                    loss = sum(x.get(p + "loss", 0) for x in logging_outputs)
                    metrics.log_scalar(p + "loss", loss / size / math.log(2), size, round=3)
            n = len(logging_outputs)
            if n and any(f"lambda_{kind}" in x for x in logging_outputs):
                lam = sum(x.get(f"lambda_{kind}", 0) for x in logging_outputs) / n
                metrics.log_scalar(f"lambda_{kind}", lam, weight=0, round=3)


def _schedule(text: str, option: str) -> PiecewiseLinearFn:
    try:
        return PiecewiseLinearFn.from_string(text)
    except (ValueError, AssertionError) as e:
        raise ValueError(
            f"{option} {text!r}: expected a number or 'update:value,update:value,...' "
            f"with increasing updates ({e})"
        ) from None
