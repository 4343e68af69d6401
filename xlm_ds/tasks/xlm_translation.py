"""``xlm_translation``: fairseq's translation task on data binarized with
the pretraining vocabulary (``dict.txt`` + ``<mask>``, exactly the
pretraining dictionary), for fine-tuning ``xlm_transformer`` models.

fairseq's own ``translation_from_pretrained_xlm`` loads a plain dictionary
into a ``MaskedLMDictionary`` that inserts ``<mask>`` at index 4 and so
shifts every id by one without any error (BLEU 3 when tried). Here the
dictionary is rebuilt exactly as pretraining built it, and the model refuses
a pretrained checkpoint whose dictionary differs.

``--autocast-bf16`` runs the steps under bf16 autocast, as pretraining does
(fairseq's ``--bf16`` does not run on a CPU).
"""
import logging
import os
from dataclasses import dataclass

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from .. import fairseq_compat
from .autocast import autocast_bf16_field, bf16_autocast
from .data_directory import DataDirectory
from .data_shards import shard_paths

logger = logging.getLogger(__name__)


@dataclass
class XLMTranslationConfig(TranslationConfig):
    autocast_bf16: bool = autocast_bf16_field()


@register_task("xlm_translation", dataclass=XLMTranslationConfig)
class XLMTranslationTask(TranslationTask):
    def __init__(self, cfg, src_dict, tgt_dict, languages):
        super().__init__(cfg, src_dict, tgt_dict)
        self.languages = languages
        # set by build_model: a checkpoint being loaded already holds its weights
        self.initialise_from_pretrained = True

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        fairseq_compat.apply()  # fairseq-train/-generate's first call into the plugin
        paths = shard_paths(cfg.data)
        cfg.data = os.pathsep.join(paths)  # fairseq's translation task then reads shard (e-1) mod N
        data = DataDirectory(paths[0])
        if cfg.source_lang is None or cfg.target_lang is None:
            if len(data.pairs) != 1:
                raise ValueError(
                    f"{paths[0]} holds pairs {data.pairs}: give --source-lang and --target-lang"
                )
            cfg.source_lang, cfg.target_lang = data.pairs[0].split("-")
        for lang in (cfg.source_lang, cfg.target_lang):
            if lang not in data.languages:
                raise ValueError(
                    f"language {lang!r} is not in {paths[0]} (languages: {', '.join(data.languages)})"
                )
        dictionary = data.load_dictionary()
        logger.info("[%s-%s] dictionary: %d types", cfg.source_lang, cfg.target_lang, len(dictionary))
        return cls(cfg, dictionary, dictionary, data.languages)

    def build_model(self, cfg, from_checkpoint=False):
        self.initialise_from_pretrained = not from_checkpoint
        return super().build_model(cfg, from_checkpoint)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        with bf16_autocast(self.cfg.autocast_bf16):
            return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample, model, criterion):
        with bf16_autocast(self.cfg.autocast_bf16):
            return super().valid_step(sample, model, criterion)
