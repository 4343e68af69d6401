"""Meta-pretraining schedule (Chi et al. 2021): the objectives used switch
at the configured update, and the phase is logged."""
import os
import re

import pytest
import torch

from xlm_ds.tasks.objectives import ObjectiveError
from xlm_ds.tasks.phased_task import PhasedTaskConfig, PhasedXLMTask, parse_phases

USER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "xlm_ds")


def test_parse_phases():
    phases = parse_phases("0=mlm:en; 500=mlm tlm:de-en@0.5", ["de", "en"], ["de-en"])
    assert [s for s, _ in phases] == [0, 500]
    assert [(o.kind, o.keys) for o in phases[0][1]] == [("mlm", ("en",))]
    assert [(o.kind, o.keys, o.weight) for o in phases[1][1]] == [
        ("mlm", ("de", "en"), 1.0), ("tlm", ("de-en",), 0.5)]
    for bad in ["5=mlm", "0=mlm; 0=tlm", "mlm", "0=mlm; 10=xyz", "0=mlm:es"]:
        with pytest.raises(ObjectiveError):
            parse_phases(bad, ["de", "en"], ["de-en"])


class _Recorder:
    """A criterion stub that records the objective and languages it sees."""

    def __init__(self):
        self.seen = []

    def __call__(self, model, sample):
        self.seen[-1].append((sample["objective"], tuple(sorted(set(sample["net_input"]["src_langs"].flatten().tolist())))))
        loss = (model.w * 0).sum() + 1.0
        return loss, 1, {"loss": 1.0, "ntokens": 1, "nsentences": 1, "sample_size": 1}


class _Opt:
    def backward(self, loss):
        loss.backward()


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def set_num_updates(self, n):
        pass


def test_objectives_switch_at_configured_update(prepared_sample):
    cfg = PhasedTaskConfig(data=prepared_sample, phases="0=mlm:en; 3=mlm tlm", seed=1, tokens_per_sample=64)
    task = PhasedXLMTask.setup_task(cfg)
    task.load_dataset("valid")
    ds = task.dataset("valid")
    ds.ordered_indices()
    assert set(ds.datasets) == {"mlm:en", "mlm:de,en,fr", "tlm:de-en,en-fr"}
    en, all_langs = task.lang2id["en"], set(task.lang2id.values())
    rec, model = _Recorder(), _Model()
    logs = []
    for update in range(6):
        batch = ds.collater([ds[i] for i in range(update * 4, update * 4 + 4)])
        rec.seen.append([])
        _, _, log = task.train_step(batch, model, rec, _Opt(), update)
        logs.append(log)
    for update, seen in enumerate(rec.seen):
        kinds = [k for k, _ in seen]
        if update < 3:
            assert kinds == ["mlm"] and seen[0][1] == (en,)
            assert logs[update]["phase_sum"] == 0
        else:
            assert kinds == ["mlm", "tlm"]
            assert logs[update]["phase_sum"] == 1
    # phase 2 MLM draws from every language (not only English)
    langs = {l for seen in rec.seen[3:] for k, ls in seen if k == "mlm" for l in ls}
    assert langs - {en}
    # the same logging keys in every phase (summable across workers)
    assert logs[0].keys() == logs[-1].keys()


@pytest.mark.slow
def test_fairseq_train_logs_the_phase(prepared_sample, run_fairseq, tmp_path):
    log = run_fairseq(
        "train", prepared_sample, "--user-dir", USER_DIR, "--task", "xlm_phased",
        "--phases", "0=mlm:en; 4=mlm tlm", "--arch", "xlm_tiny", "--criterion", "xlm_lm",
        "--tokens-per-sample", "32", "--batch-size", "4", "--optimizer", "adam", "--lr", "1e-3",
        "--max-update", "6", "--cpu", "--save-dir", str(tmp_path / "ck"), "--disable-validation",
        "--log-interval", "1", "--log-format", "simple", "--no-save", "--seed", "2",
        "--tensorboard-logdir", str(tmp_path / "tb"),
    )
    phases = [float(m) for m in re.findall(r"train_inner.* phase=([\d.]+)", log)]
    assert phases == [0, 0, 0, 0, 1, 1]
    assert "tlm_loss" not in log.split("num_updates=4,")[0]
    assert os.listdir(tmp_path / "tb" / "train_inner")
