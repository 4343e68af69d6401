"""The XLM encoder as a DeepSpeed ``PipelineModule`` (MLM objective).

Layers, in order (a stage boundary may fall between any two):

====  ======================  =============================  ==========================
idx   layer                   fairseq parameter prefix       passes on
====  ======================  =============================  ==========================
0     TokenEmbeddingPipe      ``encoder.`` (embed_tokens)    (emb, tokens, langs, target)
      (TiedLayerSpec "embed")
1     EmbeddingRestPipe       ``encoder.`` (positions,       (x, tokens, target)
                              languages, layernorm_embedding)
2..   TransformerLayerPipe    ``encoder.layers.N.``          (x, tokens, target)
      FinalLayerNormPipe      ``encoder.`` (pre-LN only)     (x, tokens, target)
      LMHeadTransformPipe     ``encoder.lm_head.``           h: features of the predicted
                              (dense, layer_norm)            positions (N, C)
      TiedLayerSpec "embed"   (tied to layer 0)              h @ embed_tokens.weightᵀ
      LMBiasPipe              ``encoder.lm_head.`` (bias)    logits (N, V)
====  ======================  =============================  ==========================

Layer 0 and the output projection share ``embed_tokens.weight`` through
DeepSpeed's ``TiedLayerSpec`` (synchronised at start, gradients all-reduced
between the two stages). The target travels with the activations so that the
LM head scores only the predicted positions (15% of them), as
``XLMEncoder.forward(masked_tokens=...)`` does; the loss (per-token mean,
the xlm task's MLM loss) and per-language statistics are computed on the
last stage. The forward computations are those of ``XLMEncoder`` (checked by
tests/engine: an exported pipeline checkpoint gives the pipeline's logits in
fairseq).

Partitioning is by parameter count (``pipeline.partition: "parameters"``,
the default here); the tied embedding counts on both stages that hold it.

One objective per pipeline run (MLM): the pipeline engine runs a fixed
schedule of identical micro-batches, so mixing MLM and TLM batches would need
two engines. Only the ``mlm`` stream of the xlm task's batches is used.
"""
import logging
import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from fairseq import utils
from fairseq.logging import metrics
from fairseq.modules import LayerNorm, PositionalEmbedding
from torch import nn

from ..models.transformer_layer import TransformerLayer
from .trainer import DeepSpeedTrainer, import_deepspeed, initialize_engine

logger = logging.getLogger("xlm_ds.engine.pipeline")


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------
class TokenEmbeddingPipe(nn.Module):
    def __init__(self, vocab: int, dim: int, padding_idx: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim, padding_idx)
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=dim**-0.5)
        nn.init.zeros_(self.embed_tokens.weight[padding_idx])

    def forward(self, inputs):
        tokens, langs, target = inputs
        return self.embed_tokens(tokens), tokens, langs, target


def project_to_vocabulary(module: TokenEmbeddingPipe, h):
    return F.linear(h, module.embed_tokens.weight)


class EmbeddingRestPipe(nn.Module):
    """XLMEncoder.embed + the padding zeroing of extract_features."""

    def __init__(self, dim, max_positions, padding_idx, n_langs, sinusoidal, normalize_before, dropout):
        super().__init__()
        self.padding_idx = padding_idx
        self.dropout = dropout
        self.embed_positions = PositionalEmbedding(max_positions, dim, padding_idx, learned=not sinusoidal)
        self.embed_langs = nn.Embedding(n_langs, dim) if n_langs > 0 else None
        if self.embed_langs is not None:
            nn.init.normal_(self.embed_langs.weight, mean=0.0, std=dim**-0.5)
        self.layernorm_embedding = None if normalize_before else LayerNorm(dim)

    def forward(self, inputs):
        emb, tokens, langs, target = inputs
        x = emb + self.embed_positions(tokens)
        if self.embed_langs is not None:
            x = x + self.embed_langs(langs)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = F.dropout(x, self.dropout, self.training)
        padding_mask = tokens.eq(self.padding_idx)
        if padding_mask.any():
            x = x * (~padding_mask).unsqueeze(-1).type_as(x)
        return x, tokens, target


class TransformerLayerPipe(TransformerLayer):
    def __init__(self, padding_idx, *args):
        super().__init__(*args)
        self.padding_idx = padding_idx

    def forward(self, inputs):
        x, tokens, target = inputs
        padding_mask = tokens.eq(self.padding_idx)
        if not padding_mask.any():
            padding_mask = None
        return super().forward(x, key_padding_mask=padding_mask), tokens, target


class FinalLayerNormPipe(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.layer_norm = LayerNorm(dim)

    def forward(self, inputs):
        x, tokens, target = inputs
        return self.layer_norm(x), tokens, target


class LMHeadTransformPipe(nn.Module):
    """RobertaLMHead up to the vocabulary projection, on predicted positions."""

    def __init__(self, dim, activation_fn, padding_idx):
        super().__init__()
        self.padding_idx = padding_idx
        self.dense = nn.Linear(dim, dim)
        self.activation_fn = utils.get_activation_fn(activation_fn)
        self.layer_norm = LayerNorm(dim)

    def forward(self, inputs):
        x, tokens, target = inputs
        features = x[target.ne(self.padding_idx), :]
        return self.layer_norm(self.activation_fn(self.dense(features)))


class LMBiasPipe(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, logits):
        return logits + self.bias


class PipelineMLMLoss:
    """Per-token mean cross-entropy of the predicted positions (the xlm
    task's MLM loss), with the sums the criterion logs, kept per micro-batch
    for the trainer."""

    def __init__(self, padding_idx: int, languages: List[str]):
        self.padding_idx = padding_idx
        self.languages = languages
        self.stats: List[torch.Tensor] = []
        self.__name__ = "PipelineMLMLoss"

    def __call__(self, logits, labels):
        target, langs = labels
        predicted = target.ne(self.padding_idx)
        n_pred = int(predicted.sum())
        nll = F.cross_entropy(logits.float(), target[predicted], reduction="none")
        loss = nll.sum()
        with torch.no_grad():
            n_langs = max(len(self.languages), 1)
            row = torch.zeros(3 + 2 * n_langs, dtype=torch.float64, device=nll.device)
            row[0] = float(loss.detach())
            row[1] = n_pred
            row[2] = 1.0  # micro-batches with a loss (this stage is the last)
            if self.languages:
                lang_ids = langs[predicted]
                row[3:3 + n_langs].scatter_add_(0, lang_ids, nll.detach().double())
                row[3 + n_langs:].scatter_add_(0, lang_ids, torch.ones_like(lang_ids, dtype=torch.float64))
            self.stats.append(row)
        return loss / max(n_pred, 1)


def layer_layout(cfg_model) -> List[str]:
    """fairseq state-dict prefix of each pipeline layer ("" = no state)."""
    layout = ["encoder.", "encoder."]
    layout += [f"encoder.layers.{i}." for i in range(cfg_model.encoder_layers)]
    if cfg_model.normalize_before:
        layout.append("encoder.")
    layout += ["encoder.lm_head.", "", "encoder.lm_head."]
    return layout


def build_pipeline_module(cfg, task, ds):
    """The PipelineModule of ``cfg.model`` (an xlm_lm architecture)."""
    import_deepspeed()
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

    from ..models.xlm_model import XLMModel

    m = cfg.model
    if getattr(m, "_name", None) is None or not str(m._name).startswith(("xlm", "xlmr")):
        raise ValueError(f"pipeline parallelism supports the xlm_lm architectures, not {m._name!r}")
    if getattr(m, "shared_top_layers", -1) >= 0:
        raise ValueError(
            "pipeline parallelism builds the plain encoder; --shared-top-layers (language-specific "
            "blocks) trains with a ZeRO config"
        )
    objectives = [o.kind for o in task.objectives]
    if objectives != ["mlm"]:
        raise ValueError(
            f"pipeline parallelism trains one objective, MLM; --objectives {task.cfg.objectives!r} "
            "gives " + ", ".join(objectives) + " (use --objectives mlm, or a ZeRO config for mixed objectives)"
        )
    from omegaconf import open_dict

    if not getattr(m, "languages", None):
        with open_dict(m):
            m.languages = ",".join(task.languages)
    if task.cfg.tokens_per_sample > m.max_positions:
        raise ValueError(f"--tokens-per-sample {task.cfg.tokens_per_sample} exceeds --max-positions {m.max_positions}")
    d = task.source_dictionary
    pad, vocab, dim = d.pad(), len(d), m.encoder_embed_dim
    languages = XLMModel.languages_of(m)
    n_langs = 0 if m.no_lang_embeddings else len(languages)
    specs = [
        TiedLayerSpec("embed", TokenEmbeddingPipe, vocab, dim, pad, tied_weight_attr=["embed_tokens.weight"]),
        LayerSpec(EmbeddingRestPipe, dim, m.max_positions, pad, n_langs, m.sinusoidal_positions,
                  m.normalize_before, m.dropout),
    ]
    for _ in range(m.encoder_layers):
        specs.append(LayerSpec(
            TransformerLayerPipe, pad, dim, m.encoder_ffn_embed_dim, m.encoder_attention_heads, m.dropout,
            m.attention_dropout, m.activation_dropout, m.activation_fn, m.normalize_before,
        ))
    if m.normalize_before:
        specs.append(LayerSpec(FinalLayerNormPipe, dim))
    specs += [
        LayerSpec(LMHeadTransformPipe, dim, m.activation_fn, pad),
        TiedLayerSpec("embed", TokenEmbeddingPipe, vocab, dim, pad, forward_fn=project_to_vocabulary,
                      tied_weight_attr=["embed_tokens.weight"]),
        LayerSpec(LMBiasPipe, vocab),
    ]
    assert len(specs) == len(layer_layout(m))
    pipe_cfg = ds.config.get("pipeline", {})
    loss_fn = PipelineMLMLoss(pad, languages)
    module = PipelineModule(
        layers=specs,
        num_stages=ds.pipeline_stages,
        loss_fn=loss_fn,
        partition_method=pipe_cfg.get("partition", "parameters"),
        activation_checkpoint_interval=int(pipe_cfg.get("activation_checkpoint_interval", 0)),
        # only transformer blocks: a checkpointed embedding (integer inputs)
        # would get no gradient with reentrant checkpointing
        checkpointable_layers=["TransformerLayerPipe"],
        dynamic_shape=True,  # batch and sequence lengths vary; the target selection too
    )
    module.xlm_loss = loss_fn
    module.xlm_max_positions = m.max_positions
    module.xlm_layout = layer_layout(m)
    return module


def load_into_pipeline(module, state: Dict[str, torch.Tensor]) -> None:
    """Load a fairseq xlm_lm state dict into this stage's layers (the
    inverse of xlm-ds-export's renaming); call before deepspeed.initialize."""
    layout = layer_layout_of(module)
    start = module._local_start
    for local_idx, layer in enumerate(module.forward_funcs):
        prefix = layout[start + local_idx]
        if not prefix or not isinstance(layer, nn.Module):
            continue
        _load_layer(layer, state, prefix, start + local_idx)
    for tied in module.tied_modules.values():
        _load_layer(tied, state, "encoder.", "tied embedding")


def _load_layer(layer, state, prefix, where):
    own = layer.state_dict()
    missing = [prefix + k for k in own if prefix + k not in state]
    if missing:
        raise KeyError(f"pipeline layer {where}: the checkpoint lacks {', '.join(missing)}")
    layer.load_state_dict({k: state[prefix + k] for k in own}, strict=True)


def layer_layout_of(module):
    return module.xlm_layout


# --------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------
class PipelineTrainer(DeepSpeedTrainer):
    """``engine.train_batch`` over the ``gradient_accumulation_steps``
    micro-batches of an update; data-parallel replicas read disjoint shards
    (sharded by data-parallel rank, so all stages of a pipeline read the same
    batches), statistics come from the last stage."""

    is_pipeline = True

    def _build_engine(self, module):
        engine = initialize_engine(module, self.cfg, self.ds)
        self.loss_fn = module.xlm_loss
        self.languages = list(self.loss_fn.languages)
        return engine

    def _model_max_positions(self):
        return self.engine.module.xlm_max_positions

    @property
    def data_parallel_rank(self) -> int:
        return self.engine.grid.get_data_parallel_rank()

    @property
    def data_parallel_process_group(self):
        return self.engine.grid.get_data_parallel_group()

    @property
    def is_last_stage(self) -> bool:
        return self.engine.is_last_stage()

    def get_model(self):
        return self.engine.module

    def begin_epoch(self, epoch):
        logger.info("begin training epoch %d", epoch)
        self.lr_step_begin_epoch(epoch)

    def begin_valid_epoch(self, epoch):
        pass

    def _pipe_batch(self, sample, is_dummy):
        sub = sample.get("mlm") if sample else None
        if not sub:
            raise RuntimeError("pipeline training needs the mlm stream in every batch")
        tokens = sub["net_input"]["src_tokens"]
        langs = sub["net_input"]["src_langs"]
        target = sub["target"]
        if is_dummy:  # no predicted position: zero loss and zero gradient
            target = torch.full_like(target, self.loss_fn.padding_idx)
        return (tokens, langs, target), (target, langs)

    def _stats_log(self, n_micro, ntokens, nsentences):
        """The xlm task's logging output for the micro-batches just run,
        summed over this rank (zeros unless this is the last stage)."""
        n_langs = max(len(self.languages), 1)
        rows = self.loss_fn.stats
        self.loss_fn.stats = []
        total = torch.stack(rows).sum(0) if rows else torch.zeros(3 + 2 * n_langs, dtype=torch.float64)
        last = bool(self.is_last_stage)
        log = {
            "loss": 0.0, "ntokens": float(ntokens) if last else 0.0,
            "nsentences": float(nsentences) if last else 0.0,
            "sample_size": float(n_micro) if last else 0.0,
            "mlm_loss": float(total[0]), "mlm_n": float(total[1]),
        }
        # the task logs the per-token mean of each micro-batch (weight 1)
        log["loss"] = float(self._mean_losses_sum) if last else 0.0
        for i, lang in enumerate(self.languages):
            log[f"mlm_{lang}_loss"] = float(total[3 + i])
            log[f"mlm_{lang}_n"] = float(total[3 + n_langs + i])
        return log

    def _run(self, samples, train: bool):
        batches, ntokens, nsentences = [], 0, 0
        for sample in samples:
            sample, is_dummy = self._prepare_sample(sample)
            batches.append(self._pipe_batch(sample, is_dummy))
            if not is_dummy:
                ntokens += sample["mlm"]["ntokens"]
                nsentences += sample["mlm"]["nsentences"]
        self.loss_fn.stats = []
        if train:
            self.engine.train_batch(data_iter=iter(batches))
        else:
            self.engine.eval_batch(data_iter=iter(batches), num_micro_batches=len(batches))
        rows = self.loss_fn.stats
        self._mean_losses_sum = sum(float(r[0]) / max(float(r[1]), 1.0) for r in rows)
        return self._stats_log(len(batches), ntokens, nsentences)

    @metrics.aggregate("train")
    def train_step(self, samples):
        self._set_seed()
        metrics.log_start_time("train_wall", priority=800, round=0)
        gas = self.ds.gradient_accumulation_steps
        if len(samples) != gas:
            raise RuntimeError(
                f"the pipeline engine runs exactly {gas} micro-batches per update, got {len(samples)} "
                "(pass --skip-remainder-batch with gradient accumulation)"
            )
        log = self._run(samples, train=True)
        grad_norm = self.engine.get_global_grad_norm()
        sample_size = log["sample_size"]
        return self._finish_update([log], sample_size, grad_norm)

    def _finish_update(self, logging_outputs, sample_size, grad_norm):
        # statistics live on the last stage of every replica: sum over the world
        applied = self.engine.was_step_applied()
        logging_output = None
        if applied:
            self.set_num_updates(self.get_num_updates() + 1)
            logging_outputs, (sample_size,) = self._aggregate_logging_outputs(logging_outputs, sample_size)
            if grad_norm is not None and not math.isfinite(float(grad_norm)):
                raise FloatingPointError(f"gradients are Nan/Inf (norm {grad_norm})")
            logging_output = self._reduce_and_log_stats(logging_outputs, sample_size, grad_norm)
        metrics.log_stop_time("train_wall")
        return logging_output

    @metrics.aggregate("valid")
    def valid_step(self, sample):
        with torch.no_grad():
            log = self._run([sample], train=False)
        logging_outputs, (sample_size,) = self._aggregate_logging_outputs([log], log["sample_size"])
        return self._reduce_and_log_stats(logging_outputs, sample_size)

    def _aggregate_logging_outputs(self, logging_outputs, *extra, group=None):
        return super()._aggregate_logging_outputs(logging_outputs, *extra, group=None)

    @property
    def data_parallel_world_size(self) -> int:
        return self.ds.data_parallel_size

    def _extra_client_state(self):
        m = self.cfg.model
        return {"pipeline_layout": layer_layout(m), "pipeline_stages": self.ds.pipeline_stages}

    def logits(self, sample):
        """Logits of the predicted positions of ``sample``'s mlm batch, on
        the last stage (None elsewhere); for tests and export checks."""
        sample, _ = self._prepare_sample(sample)
        batch = self._pipe_batch(sample, False)
        self.loss_fn.stats = []
        _, out = self.engine.eval_batch(data_iter=iter([batch]), return_logits=True, num_micro_batches=1)
        self.loss_fn.stats = []
        out = out if self.engine.is_last_stage() else None
        return None if out is None else out.detach().float().cpu()


