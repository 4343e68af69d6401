"""FAULT_SAMPLES=FILE for both probes: every training sample the trainer is
handed, one JSON line each, in ``FILE.RANK``: the epoch the trainer is in
(from its ``begin_epoch``), the update it goes into, the stream it came
from (the batch's key), its id, language and tokens. Recorded where the
loop hands batches to the trainer, so it sees what training sees."""
import json
import os

SAMPLES = os.environ.get("FAULT_SAMPLES")
PAD = 1  # fairseq Dictionary's pad index


def _rows(key, batch):
    if "query" in batch:  # xlm_align's contrastive stream
        src, tgt, langs = batch["query"]["tokens"], batch["key"]["tokens"], batch["query"]["langs"]
        strip_target = True
    else:
        net = batch["net_input"]
        src, tgt, langs = net["src_tokens"], batch["target"], net.get("src_langs")
        strip_target = ":" in key  # xlm_umt's sub-batches ("ae:en"); MLM targets keep their pads
    for i, sample_id in enumerate(batch["id"].tolist()):
        keep = src[i].ne(PAD)
        source = src[i][keep].tolist()
        target = tgt[i][tgt[i].ne(PAD)].tolist() if strip_target else tgt[i][: int(keep.sum())].tolist()
        yield {"stream": key, "id": sample_id, "lang": None if langs is None else int(langs[i][keep][0]),
               "langs": None if langs is None else langs[i][keep].tolist(), "source": source, "target": target}


def install() -> None:
    if not SAMPLES:
        return
    from fairseq.trainer import Trainer

    from xlm_ds.engine.trainer import DeepSpeedTrainer

    path = f"{SAMPLES}.{os.environ.get('RANK', '0')}"
    state = {"epoch": None}

    for cls in (Trainer, DeepSpeedTrainer):
        begin_epoch, train_step = cls.begin_epoch, cls.train_step

        def recording_begin_epoch(self, epoch, _begin=begin_epoch):
            state["epoch"] = epoch
            return _begin(self, epoch)

        def recording_train_step(self, samples, *args, _step=train_step, **kwargs):
            update = self.get_num_updates() + 1
            with open(path, "a") as f:
                for sample in samples:
                    if not isinstance(sample, dict):
                        continue  # fairseq's "DUMMY" filler batch
                    for key, batch in sample.items():
                        if isinstance(batch, dict) and "id" in batch:
                            for row in _rows(key, batch):
                                f.write(json.dumps({"epoch": state["epoch"], "update": update, **row}) + "\n")
            return _step(self, samples, *args, **kwargs)

        cls.begin_epoch = recording_begin_epoch
        cls.train_step = recording_train_step
