"""MT initialisation from a pretrained XLM: weights really copied, the
encoder computes what the pretrained model computed, and incompatible
vocabularies or languages are refused with a clear error."""
import os
import subprocess
import sys

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from xlm_ds.models.pretrained import PretrainedCheckpointError, PretrainedXLM


def build_mt(data, *extra):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [
        data, "--user-dir", "xlm_ds", "--task", "xlm_translation", "-s", "de", "-t", "en",
        "--arch", "xlm_transformer", "--cpu", *extra,
    ])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return task, task.build_model(cfg.model)


def test_init_copies_pretrained_weights(prepared_sample, pretrained_tiny):
    _, model = build_mt(prepared_sample, "--init-encoder", pretrained_tiny, "--init-decoder", pretrained_tiny)
    pre = PretrainedXLM.load(pretrained_tiny).state
    mt = model.state_dict()
    assert torch.equal(mt["encoder.embed_tokens.tokens.weight"], pre["encoder.embed_tokens.weight"])
    assert torch.equal(mt["encoder.embed_tokens.langs.weight"], pre["encoder.embed_langs.weight"])
    for side in ("encoder", "decoder"):
        assert torch.equal(mt[f"{side}.embed_positions.weight"], pre["encoder.embed_positions.weight"])
        for i in range(2):
            for name in ("self_attn.q_proj.weight", "self_attn.out_proj.bias", "fc1.weight",
                         "final_layer_norm.weight", "self_attn_layer_norm.bias"):
                assert torch.equal(mt[f"{side}.layers.{i}.{name}"], pre[f"encoder.layers.{i}.{name}"])
    # decoder output projection is tied to the (pretrained) token embeddings
    assert model.decoder.output_projection.weight.data_ptr() == model.encoder.embed_tokens.weight.data_ptr()
    # cross-attention has no pretrained counterpart and is not copied
    assert not torch.equal(mt["decoder.layers.0.encoder_attn.q_proj.weight"], pre["encoder.layers.0.self_attn.q_proj.weight"])


def test_decoder_output_layer_is_the_pretrained_lm_head(prepared_sample, pretrained_tiny):
    """XLM reloads its prediction layer into the decoder: the MT model scores
    hidden states exactly as the pretraining head did (transform and bias
    included); --output-layer tied-linear is fairseq's bare tied projection."""
    pre_models, _, _ = checkpoint_utils.load_model_ensemble_and_task([pretrained_tiny])
    pre = pre_models[0].eval()
    features = torch.randn(2, 5, pre.cfg.encoder_embed_dim)
    expected = pre.output_layer(features)
    _, model = build_mt(prepared_sample, "--init-encoder", pretrained_tiny, "--init-decoder", pretrained_tiny)
    assert torch.allclose(model.eval().decoder.output_layer(features), expected, atol=1e-5)
    _, bare = build_mt(prepared_sample, "--init-encoder", pretrained_tiny, "--init-decoder", pretrained_tiny,
                       "--output-layer", "tied-linear")
    plain = features @ pre.encoder.embed_tokens.weight.t()
    assert torch.allclose(bare.eval().decoder.output_layer(features), plain, atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-2)


def test_encoder_reproduces_pretrained_features(prepared_sample, pretrained_tiny):
    task, model = build_mt(prepared_sample, "--init-encoder", pretrained_tiny)
    pre_models, _, _ = checkpoint_utils.load_model_ensemble_and_task([pretrained_tiny])
    pre = pre_models[0].eval()
    model.eval()
    from fairseq.data import data_utils
    ds = data_utils.load_indexed_dataset(os.path.join(prepared_sample, "valid.de-en.de"), task.src_dict, "mmap")
    tokens = ds[0][None]
    de = pre.languages.index("de")
    with torch.no_grad():
        expected = pre.extract_features(tokens, langs=torch.full_like(tokens, de))
        enc = model.encoder(tokens, src_lengths=torch.tensor([tokens.size(1)]))
    got = enc["encoder_out"][0].transpose(0, 1)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_random_init_differs_from_pretrained(prepared_sample, pretrained_tiny):
    _, model = build_mt(prepared_sample, "--arch", "xlm_transformer_tiny")
    pre = PretrainedXLM.load(pretrained_tiny).state
    assert not torch.equal(model.state_dict()["encoder.layers.0.fc1.weight"], pre["encoder.layers.0.fc1.weight"])


def test_other_vocabulary_is_refused(pretrained_tiny, tmp_path):
    other = tmp_path / "other"
    corpus = os.path.join(os.path.dirname(__file__), "..", "..", "xlm_ds", "sample_corpus")
    subprocess.run(
        [sys.executable, "-m", "xlm_ds.cli.prepare", "--out", str(other), "--vocab-size", "1500",
         "--para", f"train:de-en={corpus}/valid.de-en.de.gz,{corpus}/valid.de-en.en.gz"],
        check=True, capture_output=True,
    )
    with pytest.raises(PretrainedCheckpointError, match=r"dictionary differs .*entry \d+ is .*--spm-model"):
        build_mt(str(other), "--init-encoder", pretrained_tiny)


def test_contradicting_size_is_refused(prepared_sample, pretrained_tiny):
    with pytest.raises(PretrainedCheckpointError, match="--encoder-embed-dim 128 contradicts"):
        build_mt(prepared_sample, "--init-encoder", pretrained_tiny, "--encoder-embed-dim", "128")


def test_unknown_language_is_refused(pretrained_tiny):
    pre = PretrainedXLM.load(pretrained_tiny)
    with pytest.raises(PretrainedCheckpointError, match="'ro' was not seen in pretraining"):
        pre.language_id("ro", "--source-lang ro")


def test_not_an_xlm_checkpoint_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": None}, path)
    with pytest.raises(PretrainedCheckpointError, match="not an xlm_ds pretraining checkpoint"):
        PretrainedXLM.load(str(path))
