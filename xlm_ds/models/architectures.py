"""Named sizes of the ``xlm_lm`` model. Published sizes (all with a 250k
vocabulary): XLM-R base 270M, large 560M, XL 3.5B, XXL 10.7B (Conneau et al.
2020; Goyal et al. 2021). The XLM paper's 12-layer, 1024-dim,
8-head model; it is ``xlm_1024`` (the suffix of XLM's released models) because
fairseq already registers ``xlm_base`` (and ``xlm``) for its own models."""
from fairseq.models import register_model_architecture

ARCHITECTURES = {
    # name: (layers, dim, ffn, heads, pre-LN, language embeddings)
    "xlm_tiny": (2, 64, 128, 4, False, True),
    "xlm_mini": (4, 128, 512, 4, False, True),  # the README demo (minutes on 2 cores)
    "xlm_small": (4, 256, 1024, 4, False, True),
    "xlm_1024": (12, 1024, 4096, 8, False, True),
    "xlmr_base": (12, 768, 3072, 12, False, False),
    "xlmr_large": (24, 1024, 4096, 16, False, False),
    "xlmr_xl": (36, 2560, 10240, 32, True, False),
    "xlmr_xxl": (48, 4096, 16384, 32, True, False),
}


def _register(name, layers, dim, ffn, heads, pre_ln, lang_emb):
    def arch(args):
        # fairseq adds model options without defaults (argparse.SUPPRESS), so
        # an attribute that exists was given on the command line and wins.
        for key, value in (
            ("encoder_layers", layers),
            ("encoder_embed_dim", dim),
            ("encoder_ffn_embed_dim", ffn),
            ("encoder_attention_heads", heads),
            ("normalize_before", pre_ln),
            ("no_lang_embeddings", not lang_emb),
        ):
            setattr(args, key, getattr(args, key, value))

    register_model_architecture("xlm_lm", name)(arch)
    return arch


for _name, _spec in ARCHITECTURES.items():
    _register(_name, *_spec)
