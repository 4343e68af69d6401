"""``xlm_align``: post-pretraining alignment (Pan et al. 2021, "Multilingual
BERT post-pretraining alignment"): continue from a pretrained checkpoint
(``--finetune-from-model``) with TLM (``--objectives tlm``) plus a
sentence-level contrastive objective on translation pairs, MoCo style:

* query = the model's pooled representation of one side of a pair (its
  tokens randomly shuffled with probability ``--align-shuffle-rate``),
* positive key = a momentum copy's representation of the other side
  (``--align-key-lang``, English by default, is the key side),
* negatives = a FIFO queue of the last ``--align-queue-size`` keys,
* loss = InfoNCE at temperature ``--align-temperature``, weighted by
  ``--align-weight`` and averaged over the sentences of the batch,
* after each optimizer step θ_k ← m θ_k + (1 − m) θ_q (``--align-momentum``).

The momentum encoder and the queue live in the task and are saved with it
(``state_dict``: fairseq's ``task_state`` of every checkpoint), so a resumed
run continues with the key encoder and negatives it had, not a fresh copy of
the model and an empty queue. Each rank keeps its own queue: the task
state holds rank 0's, and ``rank_state_dict`` each rank's, which
xlm-ds-train saves per rank (a data-parallel resume there is exact);
fairseq-train saves rank 0's state only, so its data-parallel resume gives
every rank rank 0's negatives.
"""
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.data import data_utils
from fairseq.tasks import register_task

from ..data.epoch_streams import StreamConcat
from ..data.objective_dataset import ObjectiveDataset, stream_seed
from ..methods.augment import shuffle_tokens
from ..methods.contrastive import KeyQueue, info_nce, make_key_encoder, momentum_update, pool
from .xlm_task import XLMTask, XLMTaskConfig

logger = logging.getLogger(__name__)


@dataclass
class AlignTaskConfig(XLMTaskConfig):
    align_pairs: str = field(default="", metadata={"help": "comma-separated pairs for the contrastive loss; empty = all"})
    align_key_lang: str = field(default="en", metadata={"help": "the side of a pair embedded by the momentum (key) encoder"})
    align_weight: float = field(default=1.0, metadata={"help": "weight of the contrastive loss"})
    align_temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature"})
    align_queue_size: int = field(default=4096, metadata={"help": "negatives kept in the FIFO queue"})
    align_momentum: float = field(default=0.999, metadata={"help": "key encoder momentum m"})
    align_shuffle_rate: float = field(default=0.0, metadata={"help": "probability of shuffling a query sentence's tokens"})
    align_pooling: str = field(default="mean", metadata={"help": "sentence embedding: mean | cls"})


class AlignPairDataset(ObjectiveDataset):
    """A translation pair as two separate inputs ``<s> sentence </s>``:
    ``source`` (query side, maybe shuffled) and ``key`` (key side)."""

    objective = "align"

    def __init__(self, query, key, query_lang, key_lang, bos, pad, max_tokens, seed, shuffle_rate=0.0):
        super().__init__(pad, seed)
        self.query, self.key = query, key
        self.query_lang, self.key_lang = query_lang, key_lang
        self.bos, self.max_tokens, self.shuffle_rate = bos, max_tokens, shuffle_rate
        self.sizes = np.minimum(query.sizes + 1, max_tokens) + np.minimum(key.sizes + 1, max_tokens)

    def __len__(self):
        return len(self.query)

    def _side(self, sentence):
        tokens = np.concatenate([[self.bos], sentence.numpy()])
        if len(tokens) > self.max_tokens:
            tokens = np.concatenate([tokens[: self.max_tokens - 1], tokens[-1:]])
        return tokens

    def build(self, index, draw):
        q, shuffled = shuffle_tokens(self._side(self.query[index]), self.shuffle_rate, self.rng(draw))
        return {"id": index, "source": torch.from_numpy(q).long(),
                "key": torch.from_numpy(self._side(self.key[index])).long(),
                "query_lang": self.query_lang, "key_lang": self.key_lang, "shuffled": shuffled}

    def collater(self, samples):
        samples = [s for s in samples if s is not None]
        if not samples:
            return {}
        src = data_utils.collate_tokens([s["source"] for s in samples], self.pad_idx)
        key = data_utils.collate_tokens([s["key"] for s in samples], self.pad_idx)
        return {
            "id": torch.tensor([s["id"] for s in samples]),
            "objective": "align",
            "nsentences": len(samples),
            "ntokens": int(src.ne(self.pad_idx).sum() + key.ne(self.pad_idx).sum()),
            "query": {"tokens": src, "langs": torch.tensor([s["query_lang"] for s in samples]).unsqueeze(1).expand_as(src).contiguous()},
            "key": {"tokens": key, "langs": torch.tensor([s["key_lang"] for s in samples]).unsqueeze(1).expand_as(key).contiguous()},
            "shuffled": torch.tensor([s["shuffled"] for s in samples]),
        }


@register_task("xlm_align", dataclass=AlignTaskConfig)
class AlignXLMTask(XLMTask):
    cfg: AlignTaskConfig

    def __init__(self, cfg, shards, dictionary):
        super().__init__(cfg, shards, dictionary)
        pairs = [p for p in cfg.align_pairs.split(",") if p] or list(shards.pairs)
        for p in pairs:
            if p not in shards.pairs:
                raise ValueError(f"--align-pairs: {p} is not in the data (pairs: {', '.join(shards.pairs)})")
        if not pairs:
            raise ValueError("xlm_align needs parallel data: the data directory has no pairs")
        if cfg.align_pooling not in ("mean", "cls"):
            raise ValueError(f"--align-pooling must be mean or cls, not {cfg.align_pooling!r}")
        self.align_pairs = pairs
        self.key_encoder = None
        self.queue = None
        self._momentum_step = None
        self._saved = None  # from a checkpoint, until the key encoder exists

    def state_dict(self):
        state = super().state_dict()
        if self.key_encoder is not None:
            state = dict(state, align={"key_encoder": self.key_encoder.state_dict(),
                                       "queue": self.queue.tensor().cpu(), "momentum_step": self._momentum_step})
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        self._saved = state.pop("align", None)
        super().load_state_dict(state)

    def rank_state_dict(self):
        """This rank's own negatives (the task state holds rank 0's)."""
        return {"align_queue": self.queue.tensor().cpu()} if self.key_encoder is not None else {}

    def load_rank_state_dict(self, state):
        if self._saved is not None and "align_queue" in state:
            self._saved["queue"] = state["align_queue"]

    def stream_keys(self):
        return sorted(set(super().stream_keys()) | set(self.align_pairs))

    def _align_dataset(self, data, pair, split):
        a, b = pair.split("-")
        query_lang, key_lang = (b, a) if a == self.cfg.align_key_lang else (a, b)
        d = self.dictionary
        q = data.load(split, f"{pair}.{query_lang}", d)
        k = data.load(split, f"{pair}.{key_lang}", d)
        return AlignPairDataset(q, k, self.lang2id[query_lang], self.lang2id[key_lang], d.bos(), d.pad(),
                                self.cfg.tokens_per_sample // 2, stream_seed(self.cfg.seed, f"align:{pair}"),
                                self.cfg.align_shuffle_rate if split.startswith("train") else 0.0)

    def extra_streams(self, data, split, epoch):
        parts = [self._align_dataset(data, p, split) for p in self.align_pairs if data.has(split, p)]
        if not parts:
            return OrderedDict()
        return OrderedDict(align=parts[0] if len(parts) == 1 else StreamConcat(parts))

    # ---- the contrastive objective -----------------------------------------
    def _embed(self, model, side):
        x, _ = model.encoder.extract_features(side["tokens"], side["langs"])
        return pool(x, side["tokens"], self.dictionary.pad(), self.cfg.align_pooling)

    def align_loss(self, model, sample, update_num=None, enqueue=True):
        """(summed InfoNCE loss, logging dict) of one ``align`` batch; keeps
        the momentum encoder and the queue up to date."""
        inner = model
        while hasattr(inner, "module"):  # DDP / fairseq's ModuleProxyWrapper
            inner = inner.module
        fresh = self.key_encoder is None
        if fresh:
            self.key_encoder = make_key_encoder(inner)
            self.queue = KeyQueue(self.cfg.align_queue_size, inner.encoder.embed_tokens.embedding_dim)
            if self._saved is not None:  # resuming: the key encoder and queue of the checkpoint
                self.key_encoder.load_state_dict(self._saved["key_encoder"])
                self.queue.enqueue(self._saved["queue"])
                self._momentum_step, self._saved, fresh = self._saved["momentum_step"], None, False
        if not fresh and update_num is not None and update_num != self._momentum_step:
            momentum_update(inner, self.key_encoder, self.cfg.align_momentum)
        if update_num is not None:
            self._momentum_step = update_num
        q = self._embed(model, sample["query"])
        self.key_encoder.eval()
        with torch.no_grad():
            k = F.normalize(self._embed(self.key_encoder, sample["key"]).float(), dim=-1)
        loss, logits = info_nce(q, k, self.queue.tensor(), self.cfg.align_temperature)
        if enqueue:
            self.queue.enqueue(k)
        n = q.size(0)
        log = {"align_loss": float(loss.detach()), "align_n": n,
               "align_correct": int((logits.argmax(1) == 0).sum()), "align_queue": len(self.queue)}
        return loss, log

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        total, size, log = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        sub = sample.get("align") if sample else None
        if sub:
            with self._autocast():
                loss, alog = self.align_loss(model, sub, update_num)
            scaled = loss * (self.cfg.align_weight / alog["align_n"])
            if ignore_grad:
                scaled = scaled * 0
            optimizer.backward(scaled)
            total += float(scaled.detach())
            log.update(alog)
        return total, size, log

    def valid_step(self, sample, model, criterion):
        loss, size, log = super().valid_step(sample, model, criterion)
        sub = sample.get("align") if sample else None
        if sub and self.key_encoder is not None:
            model.eval()
            with torch.no_grad():
                _, alog = self.align_loss(model, sub, None, enqueue=False)
            log.update(alog)
        return loss, size, log

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        n = sum(float(log.get("align_n", 0)) for log in logging_outputs)
        if n > 0:
            correct = sum(float(log.get("align_correct", 0)) for log in logging_outputs)
            metrics.log_scalar("align_acc", 100.0 * correct / n, n, round=2)
