"""Bad configuration found at start-up, each with a message that says what,
where and what was expected (in-process: these checks run before any
training, so a subprocess would only add start-up time)."""
import os
import shutil

import pytest
import torch

from xlm_ds.cli.prepare import main as prepare_main
from xlm_ds.engine import ds_config
from xlm_ds.models.pretrained import PretrainedCheckpointError, PretrainedXLM
from xlm_ds.reliability import preflight
from xlm_ds.tasks.data_directory import DataDirectoryError
from xlm_ds.tasks.objectives import ObjectiveError
from xlm_ds.tasks.xlm_task import XLMTaskConfig

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _task(data, objectives):
    from xlm_ds.tasks.xlm_task import XLMTask

    return XLMTask.setup_task(XLMTaskConfig(data=data, objectives=objectives, seed=1))


def test_data_directory_missing_a_language_file(prepared_sample, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared_sample, data)
    os.remove(data / "train.de.bin")
    task = _task(str(data), "mlm:de,en")
    with pytest.raises(DataDirectoryError) as e:
        task.load_dataset("train")
    assert str(e.value) == (f"{data}/train.de.bin/.idx: not found although {data}/manifest.json lists train/de; "
                            "the directory is incomplete, re-run xlm-ds-prepare")


def test_data_directory_missing_a_pair_file(prepared_sample, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared_sample, data)
    os.remove(data / "train.de-en.en.idx")
    with pytest.raises(DataDirectoryError, match=r"train\.de-en\.en\.bin/\.idx: not found although .* lists train/de-en"):
        _task(str(data), "tlm:de-en").load_dataset("train")


def test_data_directory_not_prepared(tmp_path):
    with pytest.raises(DataDirectoryError, match=r"manifest\.json: not found; a data directory is made by xlm-ds-prepare"):
        _task(str(tmp_path), "mlm")


@pytest.mark.parametrize("objectives, message", [
    ("xlm:en", "--objectives: cannot parse 'xlm:en'; expected OBJECTIVE[:LANGS][@WEIGHT] with OBJECTIVE one of "
               "['clm', 'mlm', 'tlm'], e.g. 'mlm:en,de tlm:de-en@0.5'"),
    ("mlm:en,xx", "--objectives: mlm:xx is not in the data directory; its monolingual languages are: de, en, fr"),
    ("tlm:de-fr", "--objectives: tlm:de-fr is not in the data directory; its language pairs are: de-en, en-fr"),
])
def test_unknown_objective_or_language(prepared_sample, objectives, message):
    with pytest.raises(ObjectiveError) as e:
        _task(prepared_sample, objectives)
    assert str(e.value) == message


def test_dictionary_differs_from_pretraining(fairseq_full):
    pre = PretrainedXLM.load(str(fairseq_full["dir"] / "checkpoint_1_10.pt"))
    symbols = list(pre.dictionary_symbols)
    symbols[100], symbols[101] = symbols[101], symbols[100]
    with pytest.raises(PretrainedCheckpointError) as e:
        pre.check_dictionary(symbols, "--init-encoder")
    assert (f"--init-encoder: dictionary differs from the one {pre.path} was pretrained with "
            f"(entry 100 is {symbols[100]!r} here but {symbols[101]!r} in pretraining)") in str(e.value)
    assert "--spm-model PRETRAIN_DATA/spm.model --dict PRETRAIN_DATA/dict.txt" in str(e.value)


def test_sentencepiece_model_and_dictionary_disagree(prepared_sample, tmp_path, capsys):
    lines = open(os.path.join(prepared_sample, "dict.txt"), encoding="utf-8").read().splitlines()
    bad = tmp_path / "dict.txt"
    bad.write_text("\n".join(lines[:-10]) + "\n", encoding="utf-8")
    corpus = os.path.join(REPO, "xlm_ds", "sample_corpus")
    rc = prepare_main(["--para", f"train:de-en={corpus}/valid.de-en.de.gz,{corpus}/valid.de-en.en.gz",
                       "--spm-model", os.path.join(prepared_sample, "spm.model"), "--dict", str(bad),
                       "--out", str(tmp_path / "ft"), "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("xlm-ds-prepare: error: "), err
    assert f"{bad}: 10 of" in err and "missing from the dictionary" in err
    assert not (tmp_path / "ft").exists()


def test_deepspeed_config_inconsistent_with_world_size():
    path = os.path.join(REPO, "ds_configs", "pipeline.json")
    with pytest.raises(ds_config.DSConfigError) as e:
        ds_config.load_and_validate(path, 3, batch_size=None, update_freq=[1], clip_norm=0.0,
                                    client_optimizer="adam", lr_scheduler="fixed", lr=1e-3)
    assert f"{path}: pipeline.stages=2 does not divide the world size 3" in str(e.value)


def test_deepspeed_batch_size_inconsistent_with_world_size(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{"train_batch_size": 30, "train_micro_batch_size_per_gpu": 8, '
                    '"gradient_accumulation_steps": 1, "zero_optimization": {"stage": 1}}')
    with pytest.raises(ds_config.DSConfigError) as e:
        ds_config.load_and_validate(str(path), 2, batch_size=None, update_freq=[1], clip_norm=0.0,
                                    client_optimizer="adam", lr_scheduler="fixed", lr=1e-3)
    assert str(path) in str(e.value) and "world size 2" in str(e.value) and "30" in str(e.value)


def test_too_little_disk_for_one_checkpoint(fairseq_full, tmp_path, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 * 2**20, 9 * 2**20, 2**20))
    save = tmp_path / "ckpt"
    with pytest.raises(preflight.PreflightError) as e:  # estimated: 12 bytes per parameter
        preflight.check_disk_space(str(save), 1_000_000)
    assert str(e.value).startswith(f"--save-dir {save}: 1.0 MiB free on the filesystem of {tmp_path}, "
                                   "one checkpoint needs 12.6 MiB (1,000,000 parameters")
    shutil.copytree(fairseq_full["dir"], save)  # measured: the newest checkpoint there
    size = os.path.getsize(save / "checkpoint_last.pt")
    with pytest.raises(preflight.PreflightError, match=f"one checkpoint needs {size / 2**20:.1f} MiB"):
        preflight.check_disk_space(str(save), 1)
    preflight.check_disk_space(str(save), 1, no_save=True)  # --no-save needs no room
    monkeypatch.undo()
    preflight.check_disk_space(str(save), 1_000_000)
