"""benchmarks/repro's XLM_ARCH_FLAGS turn stock fairseq's transformer into
xlm_transformer's architecture: after each architecture function fills its
defaults, every setting the two share is equal (the flags would go stale
silently if xlm_transformer's defaults changed)."""
import argparse


def _stock_transformer(flags):
    """fairseq-train's view of --arch transformer with FLAGS: only the given
    flags set (as on a command line), then its architecture's defaults."""
    from fairseq.models.transformer import TransformerModel, base_architecture

    parser = argparse.ArgumentParser()
    TransformerModel.add_args(parser)
    empty, given = vars(parser.parse_args([])), vars(parser.parse_args(flags))
    args = argparse.Namespace(**{k: v for k, v in given.items() if v != empty[k]})
    base_architecture(args)
    return vars(args)


def test_xlm_arch_flags_give_the_stock_transformer_xlm_transformers_architecture(repro_commands):
    from xlm_ds.models.xlm_transformer import xlm_transformer_base

    xlm = argparse.Namespace()
    xlm_transformer_base(xlm)
    xlm = vars(xlm)
    stock, peer = _stock_transformer([]), _stock_transformer(repro_commands.XLM_ARCH_FLAGS)
    shared = sorted(set(xlm) & set(peer))
    assert len(shared) > 20, shared
    assert {k: peer[k] for k in shared} == {k: xlm[k] for k in shared}
    # and the flags are what differs from the stock defaults
    assert {k for k in shared if stock[k] != xlm[k]} == {
        "activation_fn", "attention_dropout", "encoder_learned_pos", "decoder_learned_pos",
        "layernorm_embedding", "no_scale_embedding"}
