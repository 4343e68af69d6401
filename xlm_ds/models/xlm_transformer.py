"""``xlm_transformer``: fairseq's Transformer for translation, initialised
from xlm_ds pretraining checkpoints (XLM §4.3: encoder and decoder both start
from the pretrained model; cross-attention starts random; the decoder's
output layer is the pretraining LM head, as XLM reloads its prediction layer).

``--init-encoder`` and ``--init-decoder`` are independent, so random, CLM,
MLM and MLM+TLM initialisations can be compared as in XLM's Table 3. With a
checkpoint the model's sizes come from it; a size given on the command line
that contradicts it is an error, not a silent reshape.
"""
import logging
from typing import Dict, List, Optional

import torch
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import RobertaLMHead
from fairseq.models.transformer import TransformerModel, base_architecture
from omegaconf import open_dict
from torch import nn

from .architectures import ARCHITECTURES
from .language_embedding import LanguageTaggedEmbedding
from .pretrained import PretrainedCheckpointError, PretrainedXLM

logger = logging.getLogger(__name__)

OUTPUT_LAYERS = ("lm-head", "tied-linear")

# transformer option <- xlm_lm option; applied to both sides when initialising
_SHARED_SIZES = {
    "embed_dim": "encoder_embed_dim",
    "ffn_embed_dim": "encoder_ffn_embed_dim",
    "attention_heads": "encoder_attention_heads",
    "normalize_before": "normalize_before",
}


@register_model("xlm_transformer")
class XLMTransformerModel(TransformerModel):
    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument("--init-encoder", metavar="CHECKPOINT",
                            help="xlm_ds pretraining checkpoint to initialise the encoder (and embeddings) from")
        parser.add_argument("--init-decoder", metavar="CHECKPOINT",
                            help="xlm_ds pretraining checkpoint to initialise the decoder from "
                            "(self-attention and FFN; cross-attention starts random)")
        parser.add_argument("--xlm-languages", metavar="L1,L2,...",
                            help="language ids of the language embeddings (filled from the "
                            "pretrained checkpoint or the data directory; stored in checkpoints)")
        parser.add_argument("--no-lang-embeddings", action="store_true",
                            help="no language embeddings (XLM-R style)")
        parser.add_argument("--output-layer", choices=OUTPUT_LAYERS,
                            help="decoder output layer: 'lm-head' (default) = the pretraining LM "
                            "head (dense, activation, layer norm, tied projection, bias), taken "
                            "from --init-decoder as XLM does; 'tied-linear' = fairseq's plain tied "
                            "projection (the pretrained head is dropped)")

    @classmethod
    def build_model(cls, args, task):
        init = getattr(task, "initialise_from_pretrained", True)
        enc_path = getattr(args, "init_encoder", None)
        dec_path = getattr(args, "init_decoder", None)
        loaded: Dict[str, PretrainedXLM] = {}
        if init:
            for path in {p for p in (enc_path, dec_path) if p}:
                loaded[path] = PretrainedXLM.load(path)
        with open_dict(args) if hasattr(args, "_metadata") else _nullcontext():
            for side, path in (("encoder", enc_path), ("decoder", dec_path)):
                if path and init:
                    _adopt_sizes(args, loaded[path], side)
            if init and bool(enc_path) != bool(dec_path):
                _mirror_sizes(args, "encoder" if enc_path else "decoder")
            xlm_transformer_base(args)
            # shared embeddings: one width everywhere (fairseq's parse-time
            # defaults would otherwise keep a 512-dim decoder input/output)
            if args.decoder_embed_dim != args.encoder_embed_dim:
                raise PretrainedCheckpointError(
                    f"--decoder-embed-dim {args.decoder_embed_dim} differs from --encoder-embed-dim "
                    f"{args.encoder_embed_dim}; xlm_transformer shares all embeddings"
                )
            args.decoder_input_dim = args.decoder_output_dim = args.decoder_embed_dim
            args.share_all_embeddings = True
            args.share_decoder_input_output_embed = True
            first = loaded.get(enc_path) or loaded.get(dec_path)
            if first is not None:
                args.xlm_languages = ",".join(first.languages)
                args.no_lang_embeddings = not first.has_language_embeddings
            elif not getattr(args, "xlm_languages", None):
                args.xlm_languages = ",".join(task.languages)
        languages = [x for x in args.xlm_languages.split(",") if x]
        dictionary = task.source_dictionary
        for pre in loaded.values():
            pre.check_dictionary(dictionary.symbols, f"{task.cfg.data}/dict.txt")
            for lang in (task.cfg.source_lang, task.cfg.target_lang):
                pre.language_id(lang, f"--source-lang/--target-lang {lang}")
        for lang in (task.cfg.source_lang, task.cfg.target_lang):
            if lang not in languages:
                raise PretrainedCheckpointError(
                    f"language {lang!r} has no language embedding (model languages: {args.xlm_languages})"
                )

        dim = args.encoder_embed_dim
        tokens = cls.build_embedding(args, dictionary, dim)
        langs = None if args.no_lang_embeddings else nn.Embedding(len(languages), dim)
        if langs is not None:
            nn.init.normal_(langs.weight, mean=0, std=dim**-0.5)
        src = LanguageTaggedEmbedding(tokens, langs, languages.index(task.cfg.source_lang))
        tgt = LanguageTaggedEmbedding(tokens, langs, languages.index(task.cfg.target_lang))
        encoder = cls.build_encoder(args, dictionary, src)
        decoder = cls.build_decoder(args, dictionary, tgt)
        if args.output_layer == "lm-head":
            # the pretraining head over the shared token table (XLM §4.3 reloads
            # its prediction layer into the decoder)
            decoder.output_projection = RobertaLMHead(
                dim, len(dictionary), args.activation_fn, weight=tokens.weight
            )
        model = cls(args, encoder, decoder)
        if langs is not None and not loaded:
            # A random translation model's language embeddings start at zero,
            # so it starts as fairseq's transformer: each side has one language,
            # so its row is one vector added to every input token, and drawn
            # at random (as XLM's pretraining draws them) it is as large as a
            # token's embedding and carries nothing; it cost the random row of
            # experiment 1 0.1-0.4 bits (docs/results.md). Zeroed here, after
            # every other weight is drawn, so the other weights stay the same.
            nn.init.zeros_(langs.weight)
        if enc_path and init:
            model.load_pretrained(loaded[enc_path], encoder=True)
        if dec_path and init:
            model.load_pretrained(loaded[dec_path], decoder=True, embeddings=not enc_path)
        return model

    def set_languages(self, source: str, target: str) -> None:
        """Which language embedding each side adds from now on. A built model
        translates the task's one direction; unsupervised MT (``xlm_umt``)
        switches direction per sub-batch (auto-encoding, back-translation)
        and fairseq's encoder/decoder calls carry no language argument."""
        languages = self.args.xlm_languages.split(",")
        for side, lang in ((self.encoder, source), (self.decoder, target)):
            if lang not in languages:
                raise ValueError(f"language {lang!r} has no language embedding (model: {self.args.xlm_languages})")
            side.embed_tokens.lang_id = languages.index(lang)

    def load_pretrained(self, pre: PretrainedXLM, encoder=False, decoder=False, embeddings=True):
        mapped = map_pretrained_state(
            pre.state, self.args.encoder_layers if encoder else 0,
            self.args.decoder_layers if decoder else 0, embeddings,
            lm_head=decoder and self.args.output_layer == "lm-head",
        )
        own = self.state_dict()
        for key, value in mapped.items():
            if key not in own:
                raise PretrainedCheckpointError(f"{pre.path}: {key} has no place in the translation model")
            if own[key].shape != value.shape:
                raise PretrainedCheckpointError(
                    f"{pre.path}: {key} has shape {tuple(value.shape)}, the model {tuple(own[key].shape)}"
                )
        self.load_state_dict(mapped, strict=False)
        logger.info("initialised %d tensors from %s", len(mapped), pre.path)


def map_pretrained_state(
    state: Dict[str, torch.Tensor], encoder_layers: int, decoder_layers: int, embeddings: bool,
    lm_head: bool = False,
) -> Dict[str, torch.Tensor]:
    """xlm_lm parameter names -> xlm_transformer names. The block layouts are
    identical (same submodule names), so this only moves prefixes; with
    ``lm_head`` the pretraining head becomes the decoder's output layer (its
    projection is the token table, loaded with the embeddings)."""
    out = {}
    if lm_head:
        for key, value in state.items():
            if key.startswith("encoder.lm_head.") and key != "encoder.lm_head.weight":
                out["decoder.output_projection." + key[len("encoder.lm_head."):]] = value
    if embeddings:
        out["encoder.embed_tokens.tokens.weight"] = state["encoder.embed_tokens.weight"]
        if "encoder.embed_langs.weight" in state:
            out["encoder.embed_tokens.langs.weight"] = state["encoder.embed_langs.weight"]
    n_pre = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    for side, n_layers in (("encoder", encoder_layers), ("decoder", decoder_layers)):
        if not n_layers:
            continue
        if n_layers > n_pre:
            raise PretrainedCheckpointError(
                f"--{side}-layers {n_layers} exceeds the {n_pre} pretrained layers"
            )
        for key, value in state.items():
            parts = key.split(".")
            if key.startswith(("encoder.embed_positions.", "encoder.layernorm_embedding.",
                               "encoder.layer_norm.")):
                out[f"{side}.{'.'.join(parts[1:])}"] = value
            elif key.startswith("encoder.layers.") and int(parts[2]) < n_layers:
                out[f"{side}.{'.'.join(parts[1:])}"] = value
    return out


def _adopt_sizes(args, pre: PretrainedXLM, side: str):
    cfg = pre.cfg
    wanted = {f"{side}_{k}": getattr(cfg, v) for k, v in _SHARED_SIZES.items()}
    wanted[f"{side}_learned_pos"] = not cfg.sinusoidal_positions
    wanted[f"max_{'source' if side == 'encoder' else 'target'}_positions"] = cfg.max_positions
    if side == "encoder":
        wanted["encoder_layers"] = cfg.encoder_layers
    explicit = set((getattr(args, "xlm_explicit_sizes", "") or "").split(","))
    if side == "decoder" and "decoder_layers" not in explicit:
        # a decoder may use fewer blocks than pretrained (the first ones), so
        # its depth is only a default
        args.decoder_layers = cfg.encoder_layers
    for key, value in wanted.items():
        given = getattr(args, key, None)
        if key in explicit and given != value:
            raise PretrainedCheckpointError(
                f"--{key.replace('_', '-')} {given} contradicts {pre.path} ({value})"
            )
        setattr(args, key, value)
    args.activation_fn = cfg.activation_fn
    args.layernorm_embedding = not cfg.normalize_before
    args.no_scale_embedding = True


def _mirror_sizes(args, initialised: str):
    """With one side from a checkpoint, the other side takes its sizes
    unless they were given on the command line."""
    other = "decoder" if initialised == "encoder" else "encoder"
    explicit = set((getattr(args, "xlm_explicit_sizes", "") or "").split(","))
    for key in (*_SHARED_SIZES, "layers", "learned_pos"):
        if f"{other}_{key}" not in explicit:
            setattr(args, f"{other}_{key}", getattr(args, f"{initialised}_{key}"))
    if other == "encoder":
        args.max_source_positions = args.max_target_positions
    else:
        args.max_target_positions = args.max_source_positions


_SIZE_KEYS = [
    f"{side}_{k}" for side in ("encoder", "decoder") for k in _SHARED_SIZES
] + ["encoder_layers", "decoder_layers", "encoder_learned_pos", "decoder_learned_pos"]


def _record_explicit_sizes(args):
    """Architecture functions run at parse time and fill every default, after
    which a size the user typed is indistinguishable from a default; remember
    which were typed so only those are checked against a checkpoint."""
    if getattr(args, "xlm_explicit_sizes", None) is None:
        args.xlm_explicit_sizes = ",".join(
            k for k in _SIZE_KEYS if getattr(args, k, None) is not None
        )


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@register_model_architecture("xlm_transformer", "xlm_transformer")
def xlm_transformer_base(args):
    """XLM-style defaults: GELU, learned positions, embedding layer norm, no
    embedding scaling, all embeddings shared."""
    _record_explicit_sizes(args)
    args.activation_fn = getattr(args, "activation_fn", "gelu")
    args.encoder_learned_pos = getattr(args, "encoder_learned_pos", True)
    args.decoder_learned_pos = getattr(args, "decoder_learned_pos", True)
    args.layernorm_embedding = getattr(args, "layernorm_embedding", True)
    args.no_scale_embedding = getattr(args, "no_scale_embedding", True)
    args.attention_dropout = getattr(args, "attention_dropout", 0.1)
    args.max_source_positions = getattr(args, "max_source_positions", None) or 512
    args.max_target_positions = getattr(args, "max_target_positions", None) or 512
    args.no_lang_embeddings = getattr(args, "no_lang_embeddings", False)
    args.output_layer = getattr(args, "output_layer", None) or "lm-head"
    base_architecture(args)


def _register_pretraining_size(name, layers, dim, ffn, heads, pre_ln, lang_emb):
    """``xlm_transformer_X`` = the shape of pretraining's ``xlm_X`` on both
    sides, so a randomly initialised baseline has exactly the pretrained
    model's shape (with a checkpoint the sizes come from it anyway)."""

    def arch(args):
        _record_explicit_sizes(args)
        for side in ("encoder", "decoder"):
            for key, value in (("layers", layers), ("embed_dim", dim), ("ffn_embed_dim", ffn),
                               ("attention_heads", heads), ("normalize_before", pre_ln)):
                setattr(args, f"{side}_{key}", getattr(args, f"{side}_{key}", value))
        args.no_lang_embeddings = getattr(args, "no_lang_embeddings", not lang_emb)
        xlm_transformer_base(args)

    register_model_architecture("xlm_transformer", "xlm_transformer_" + name[len("xlm_"):])(arch)


for _name, _spec in ARCHITECTURES.items():
    if _name.startswith("xlm_"):  # xlm_tiny -> xlm_transformer_tiny, ..., xlm_1024
        _register_pretraining_size(_name, *_spec)
