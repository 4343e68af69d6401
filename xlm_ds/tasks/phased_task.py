"""``xlm_phased``: the ``xlm`` task with an objective schedule, for
cross-lingual meta-pretraining (Chi et al. 2021): a monolingual phase (e.g.
MLM on English) before the cross-lingual phase (MLM + TLM on everything).

    --phases "0=mlm:en; 500=mlm tlm"

``;``-separated phases, each ``START=OBJECTIVES`` where START is the first
update of the phase (the first phase starts at 0) and OBJECTIVES uses the
``--objectives`` mini-language (weights included). Every objective stream of
every phase is loaded once; an update uses the batches of its phase's
objectives only. The phase index is logged as the scalar ``phase`` (train
and TensorBoard), so the switch is visible. ``--objectives`` is ignored.
"""
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Tuple

from fairseq import metrics
from fairseq.tasks import register_task


from .objectives import Objective, ObjectiveError, parse_objectives
from .xlm_task import XLMTask, XLMTaskConfig

logger = logging.getLogger(__name__)


@dataclass
class PhasedTaskConfig(XLMTaskConfig):
    phases: str = field(
        default="0=mlm",
        metadata={"help": "objective schedule 'START=OBJECTIVES; START=OBJECTIVES', e.g. "
                  "'0=mlm:en; 500=mlm tlm' (Chi et al. 2021 meta-pretraining)"},
    )


def parse_phases(spec: str, mono_langs, pairs) -> List[Tuple[int, List[Objective]]]:
    phases = []
    for i, part in enumerate(p.strip() for p in spec.split(";") if p.strip()):
        start, sep, objectives = part.partition("=")
        try:
            start = int(start.strip())
        except ValueError:
            start = None
        if not sep or start is None or start < 0:
            raise ObjectiveError(
                f"--phases: cannot parse {part!r}; expected START=OBJECTIVES, e.g. '0=mlm:en; 500=mlm tlm'"
            )
        if i == 0 and start != 0:
            raise ObjectiveError(f"--phases: the first phase must start at update 0, not {start}")
        if phases and start <= phases[-1][0]:
            raise ObjectiveError(f"--phases: phase starts must increase ({phases[-1][0]} then {start})")
        phases.append((start, parse_objectives(objectives, mono_langs, pairs, where=f"--phases {part!r}")))
    if not phases:
        raise ObjectiveError("--phases: no phase given")
    return phases


def stream_name(obj: Objective) -> str:
    return f"{obj.kind}:{','.join(obj.keys)}"


@register_task("xlm_phased", dataclass=PhasedTaskConfig)
class PhasedXLMTask(XLMTask):
    cfg: PhasedTaskConfig

    def __init__(self, cfg, shards, dictionary):
        super().__init__(cfg, shards, dictionary)
        self.phases = parse_phases(cfg.phases, shards.mono_languages, shards.pairs)
        unique = OrderedDict()
        for _, objs in self.phases:
            for o in objs:
                unique.setdefault(stream_name(o), o)
        self.all_objectives = list(unique.values())
        self.objectives = self.phases[0][1]
        self.current_phase = 0
        logger.info("phases: %s", "; ".join(
            f"from update {s}: {' '.join(stream_name(o) for o in objs)}" for s, objs in self.phases))

    def phase_at(self, update_num: int) -> int:
        index = 0
        for i, (start, _) in enumerate(self.phases):
            if update_num >= start:
                index = i
        return index

    def _enter_phase(self, update_num):
        index = self.phase_at(update_num)
        if index != self.current_phase:
            logger.info("update %d: entering phase %d (%s)", update_num, index,
                        " ".join(stream_name(o) for o in self.phases[index][1]))
        self.current_phase = index
        self.objectives = self.phases[index][1]

    def stream_objectives(self):
        return self.all_objectives

    def stream_name(self, obj):
        return stream_name(obj)

    def _phase_sample(self, sample):
        if not sample:
            return sample
        return {o.kind: sample[stream_name(o)] for o in self.objectives if stream_name(o) in sample}

    def _empty_log(self):
        keep = self.objectives
        self.objectives = self.all_objectives  # same keys in every phase
        try:
            log = super()._empty_log()
        finally:
            self.objectives = keep
        return log

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        self._enter_phase(update_num)
        loss, size, log = super().train_step(
            self._phase_sample(sample), model, criterion, optimizer, update_num, ignore_grad
        )
        log["phase_sum"] = self.current_phase
        log["phase_steps"] = 1
        return loss, size, log

    def valid_step(self, sample, model, criterion):
        return super().valid_step(self._phase_sample(sample), model, criterion)

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)
        steps = sum(float(log.get("phase_steps", 0)) for log in logging_outputs)
        if steps > 0:
            total = sum(float(log.get("phase_sum", 0)) for log in logging_outputs)
            metrics.log_scalar("phase", total / steps, weight=0, round=2)
