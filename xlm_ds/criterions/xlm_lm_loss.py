"""Cross-entropy of the predicted positions (masked for MLM/TLM, all for
CLM), reported per objective and per language so TensorBoard shows whether
low-resource languages are learning, not only the average."""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass


@dataclass
class XLMLossConfig(FairseqDataclass):
    pass


@register_criterion("xlm_lm", dataclass=XLMLossConfig)
class XLMLMCriterion(FairseqCriterion):
    def __init__(self, task):
        super().__init__(task)
        self.languages = list(getattr(task, "languages", []))

    def forward(self, model, sample, reduce=True):
        target = sample["target"]
        predicted = target.ne(self.padding_idx)
        logits, _ = model(**sample["net_input"], masked_tokens=predicted)
        return self.loss_of_logits(
            logits, target, sample["net_input"]["src_langs"], sample.get("objective", "lm"),
            sample["ntokens"], sample["nsentences"],
        )

    def loss_of_logits(self, logits, target, langs, kind, ntokens, nsentences):
        """(summed loss, predicted positions, logging output) of the logits
        of ``target``'s predicted positions; the pipeline's last stage
        (engine/pipeline.py) calls it too."""
        predicted = target.ne(self.padding_idx)
        n_pred = int(predicted.sum())
        nll = F.cross_entropy(
            logits.view(-1, logits.size(-1)).float(), target[predicted], reduction="none"
        )
        loss = nll.sum()
        log = {
            "loss": loss.detach(),
            "ntokens": ntokens,
            "nsentences": nsentences,
            "sample_size": n_pred,
            f"{kind}_loss": float(loss.detach()),
            f"{kind}_n": n_pred,
        }
        if self.languages:
            langs = langs[predicted]
            n_langs = len(self.languages)
            sums = torch.zeros(n_langs, dtype=torch.float64, device=nll.device)
            sums.scatter_add_(0, langs, nll.detach().double())
            counts = torch.bincount(langs, minlength=n_langs)
            for i, lang in enumerate(self.languages):
                if counts[i] > 0:
                    log[f"{kind}_{lang}_loss"] = float(sums[i])
                    log[f"{kind}_{lang}_n"] = int(counts[i])
        return loss, n_pred, log

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        sample_size = total("sample_size")
        metrics.log_scalar("loss", total("loss") / max(sample_size, 1) / math.log(2), sample_size, round=3)
        metrics.log_derived("ppl", lambda m: utils.get_perplexity(m["loss"].avg))
        keys = sorted({k[: -len("_loss")] for log in logging_outputs for k in log if k.endswith("_loss")})
        for name in keys:
            n = total(f"{name}_n")
            if n > 0:
                # base 2, like fairseq's own loss
                metrics.log_scalar(f"{name}_loss", total(f"{name}_loss") / n / math.log(2), n, round=3)
                # get_perplexity copes with an interval where this
                # language had no tokens (avg is None then)
                metrics.log_derived(
                    f"{name}_ppl", lambda m, key=f"{name}_loss": utils.get_perplexity(m[key].avg)
                )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # the xlm task logs the same keys on every rank (zeros included)
        return True
