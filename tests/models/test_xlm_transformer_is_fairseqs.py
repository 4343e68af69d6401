"""A random ``xlm_transformer`` is fairseq's own transformer with XLM's
architecture choices: given the same weights, ``--output-layer tied-linear``
and no language embeddings, it computes the same logits as stock
``--arch transformer`` with ``XLM_ARCH_FLAGS`` (benchmarks/repro/commands.py).
A random model's language embeddings start at zero, so it computes them
with its language embeddings on too: it starts as the stock transformer."""
import os

import torch
from fairseq import options, tasks

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZES = ["--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
         "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4", "-s", "de", "-t", "en", "--dropout", "0", "--attention-dropout", "0",
         "--max-source-positions", "128", "--max-target-positions", "128"]


def _build(argv):
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    task = tasks.setup_task(args)
    return task, task.build_model(args)


def _logits(prepared_sample, xlm_arch_flags, *ours_extra, lang_std=0.0):
    ours_task, ours = _build([prepared_sample, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task",
                              "xlm_translation", "--arch", "xlm_transformer", "--output-layer", "tied-linear",
                              *SIZES, *ours_extra])
    _, peer = _build([prepared_sample, "--task", "translation", "--arch", "transformer", "--share-all-embeddings",
                      *SIZES, *xlm_arch_flags])
    theirs = peer.state_dict()
    if lang_std:
        torch.nn.init.normal_(ours.encoder.embed_tokens.langs.weight, std=lang_std)
    mine = {k.replace("embed_tokens.tokens.", "embed_tokens."): v for k, v in ours.state_dict().items()}
    mine = {k: v for k, v in mine.items() if "embed_tokens.langs." not in k}
    assert set(mine) == set(theirs)
    # our dictionary is the pretraining one: the stock one plus <mask> as its last symbol
    peer.load_state_dict({k: mine[k][: v.shape[0]] for k, v in theirs.items()})
    ours_task.load_dataset("valid")
    data = ours_task.dataset("valid")
    batch = data.collater([data[i] for i in range(8)])
    ours.eval(), peer.eval()
    with torch.no_grad():
        a, b = ours(**batch["net_input"])[0], peer(**batch["net_input"])[0]
    return a[..., : b.shape[-1]], b


def test_without_language_embeddings_the_logits_are_stock_fairseqs(prepared_sample, repro_commands):
    a, b = _logits(prepared_sample, repro_commands.XLM_ARCH_FLAGS, "--no-lang-embeddings")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_random_model_starts_as_stock_fairseqs_with_its_language_embeddings_on(prepared_sample, repro_commands):
    """They start at zero (xlm_transformer.build_model): drawn at random they
    cost the random row 0.1-0.4 bits of validation loss."""
    a, b = _logits(prepared_sample, repro_commands.XLM_ARCH_FLAGS)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_language_embeddings_are_the_only_difference(prepared_sample, repro_commands):
    a, b = _logits(prepared_sample, repro_commands.XLM_ARCH_FLAGS, lang_std=0.1)
    assert (a - b).abs().max() > 1e-2
