"""MoCo contrastive alignment (Pan et al. 2021): loss, queue, momentum."""
import math

import pytest
import torch
from torch import nn

from xlm_ds.methods.contrastive import KeyQueue, info_nce, make_key_encoder, momentum_update, pool


def test_info_nce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    k = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # normalised inside: [1,0], [0,1]
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.6, -0.8]])
    t = 0.5
    loss, logits = info_nce(q, k, queue, t, reduction="sum")
    expected = 0.0
    for qi, ki in zip(q, k):
        qn, kn = qi / qi.norm(), ki / ki.norm()
        pos = float(qn @ kn) / t
        negs = [float(qn @ n) / t for n in queue]
        expected += -pos + math.log(math.exp(pos) + sum(math.exp(x) for x in negs))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert logits.shape == (2, 4)
    assert float(logits[1, 0]) == pytest.approx(0.8 / t)
    mean, _ = info_nce(q, k, queue, t, reduction="mean")
    assert float(mean) == pytest.approx(expected / 2, rel=1e-6)
    # without negatives the positive is the only class: zero loss
    zero, _ = info_nce(q, k, None, t)
    assert float(zero) == pytest.approx(0.0, abs=1e-7)


def test_info_nce_gradient_reaches_query_only():
    q = torch.randn(3, 4, requires_grad=True)
    k = torch.randn(3, 4, requires_grad=True)
    loss, _ = info_nce(q, k, torch.randn(5, 4), 0.1)
    loss.backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


def test_queue_is_fifo_with_fixed_size():
    qu = KeyQueue(size=5, dim=2)
    assert len(qu) == 0
    batches = [torch.full((2, 2), float(i)) for i in range(4)]  # rows 0,0,1,1,2,2,3,3
    qu.enqueue(batches[0])
    assert qu.tensor()[:, 0].tolist() == [0, 0]
    for b in batches[1:]:
        qu.enqueue(b)
    assert len(qu) == 5
    # the oldest rows were dropped first, newest last
    assert qu.tensor()[:, 0].tolist() == [1, 2, 2, 3, 3]
    qu.enqueue(torch.arange(14.0).view(7, 2))  # more than size at once: newest 5 kept
    assert qu.tensor()[:, 0].tolist() == [4, 6, 8, 10, 12]
    empty = KeyQueue(size=0, dim=2)
    empty.enqueue(torch.ones(3, 2))
    assert len(empty) == 0


def test_momentum_update_formula():
    torch.manual_seed(0)
    query = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    key = make_key_encoder(query)
    assert all(not p.requires_grad for p in key.parameters())
    for p in key.parameters():  # θ_k differs from θ_q
        p.data.normal_()
    before = [p.detach().clone() for p in key.parameters()]
    m = 0.9
    momentum_update(query, key, m)
    for pk, pk0, pq in zip(key.parameters(), before, query.parameters()):
        assert torch.allclose(pk, m * pk0 + (1 - m) * pq, atol=1e-7)
    # m = 1: key frozen; m = 0: key copies the query
    snap = [p.detach().clone() for p in key.parameters()]
    momentum_update(query, key, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(key.parameters(), snap))
    momentum_update(query, key, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(key.parameters(), query.parameters()))
    with pytest.raises(ValueError):
        momentum_update(query, key, 1.5)


def test_mean_pool_ignores_padding():
    feats = torch.tensor([[[1.0], [3.0], [100.0]]])
    tokens = torch.tensor([[5, 6, 1]])
    assert pool(feats, tokens, pad=1).tolist() == [[2.0]]
    assert pool(feats, tokens, pad=1, how="cls").tolist() == [[1.0]]


def test_align_task_step_updates_queue_and_key_encoder(prepared_sample):
    """One xlm_align batch: loss = hand InfoNCE of the model's embeddings,
    queue grows by the batch, the key encoder follows the momentum rule."""
    from omegaconf import OmegaConf

    from xlm_ds.models.xlm_model import XLMConfig, XLMModel
    from xlm_ds.tasks.alignment_task import AlignTaskConfig, AlignXLMTask

    cfg = AlignTaskConfig(data=prepared_sample, objectives="tlm", seed=1, align_queue_size=6,
                          align_momentum=0.5, align_temperature=0.2, tokens_per_sample=64)
    task = AlignXLMTask.setup_task(cfg)
    task.load_dataset("valid")
    ds = task.dataset("valid").datasets["align"]
    model = XLMModel.build_model(OmegaConf.structured(XLMConfig(encoder_layers=1, encoder_embed_dim=16, encoder_ffn_embed_dim=32,
                                           encoder_attention_heads=2, dropout=0.0, attention_dropout=0.0,
                                           max_positions=64)), task)
    model.eval()
    batch = ds.collater([ds[i] for i in range(4)])
    # the English side is the key side of de-en
    assert (batch["key"]["langs"] == task.lang2id["en"]).all()
    loss, log = task.align_loss(model, batch, update_num=1)
    assert len(task.queue) == 4 and log["align_n"] == 4
    q = pool(model.encoder.extract_features(batch["query"]["tokens"], batch["query"]["langs"])[0],
             batch["query"]["tokens"], task.dictionary.pad())
    k = pool(model.encoder.extract_features(batch["key"]["tokens"], batch["key"]["langs"])[0],
             batch["key"]["tokens"], task.dictionary.pad())
    ref, _ = info_nce(q, k, None, 0.2)  # empty queue at the first step
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    # a parameter step of the query model, then the next update: θ_k ← m θ_k + (1-m) θ_q
    key_before = [p.detach().clone() for p in task.key_encoder.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    batch2 = ds.collater([ds[i] for i in range(4, 8)])
    task.align_loss(model, batch2, update_num=2)
    for pk, pk0, pq in zip(task.key_encoder.parameters(), key_before, model.parameters()):
        assert torch.allclose(pk, 0.5 * pk0 + 0.5 * pq, atol=1e-6)
    assert len(task.queue) == 6  # capped at --align-queue-size
    # same update number again (gradient accumulation): no second momentum step
    snap = [p.detach().clone() for p in task.key_encoder.parameters()]
    task.align_loss(model, batch2, update_num=2)
    assert all(torch.equal(a, b) for a, b in zip(task.key_encoder.parameters(), snap))


def test_align_task_state_round_trips_through_a_checkpoint(prepared_sample):
    """The task state a checkpoint holds (task.state_dict(), what fairseq
    and xlm-ds-train save) gives a new task the key encoder, queue and
    momentum step of the old one: the next update's loss is the same."""
    from omegaconf import OmegaConf

    from xlm_ds.models.xlm_model import XLMConfig, XLMModel
    from xlm_ds.tasks.alignment_task import AlignTaskConfig, AlignXLMTask

    cfg = AlignTaskConfig(data=prepared_sample, objectives="tlm", seed=1, align_queue_size=6,
                          align_momentum=0.5, tokens_per_sample=64)

    def new_task():
        task = AlignXLMTask.setup_task(cfg)
        task.load_dataset("valid")
        return task

    task = new_task()
    ds = task.dataset("valid").datasets["align"]
    model = XLMModel.build_model(OmegaConf.structured(XLMConfig(
        encoder_layers=1, encoder_embed_dim=16, encoder_ffn_embed_dim=32, encoder_attention_heads=2,
        dropout=0.0, attention_dropout=0.0, max_positions=64)), task).eval()
    batches = [ds.collater([ds[i] for i in range(j, j + 4)]) for j in (0, 4, 8)]
    for u, b in enumerate(batches[:2], start=1):
        task.align_loss(model, b, update_num=u)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)  # an optimizer step, so the key encoder lags the model
    saved = torch.load(_through_bytes(task.state_dict()), weights_only=False)
    assert set(saved["align"]) == {"key_encoder", "queue", "momentum_step"}
    resumed = new_task()
    resumed.load_state_dict(saved)
    expected, _ = task.align_loss(model, batches[2], update_num=3)
    got, _ = resumed.align_loss(model, batches[2], update_num=3)
    assert float(got) == float(expected)
    fresh, _ = new_task().align_loss(model, batches[2], update_num=3)  # what a resume gave before
    assert float(fresh) != float(expected)


def _through_bytes(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf
