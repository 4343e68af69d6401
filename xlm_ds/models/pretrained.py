"""Reading an xlm_ds pretraining checkpoint for reuse (MT initialisation,
retrieval, export), with the compatibility checks that keep a fine-tuning
run from silently training on shifted token ids or wrong language ids."""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from fairseq import checkpoint_utils

from ..fairseq_compat import trusted_checkpoints


class PretrainedCheckpointError(ValueError):
    pass


@dataclass
class PretrainedXLM:
    path: str
    cfg: object  # the pretraining model config (xlm_lm)
    state: Dict[str, torch.Tensor]
    languages: List[str]
    dictionary_symbols: List[str]
    task_data: Optional[str] = None  # the run's DATA (its spm.model segments raw text)

    @classmethod
    def load(cls, path: str) -> "PretrainedXLM":
        if not os.path.isfile(path):
            raise PretrainedCheckpointError(f"{path}: pretrained checkpoint not found")
        try:
            with trusted_checkpoints():
                ckpt = checkpoint_utils.load_checkpoint_to_cpu(path)
        except Exception as e:  # fairseq's upgrade code fails on foreign dicts
            raise PretrainedCheckpointError(
                f"{path}: not an xlm_ds pretraining checkpoint (fairseq cannot read it: "
                f"{type(e).__name__}: {e})"
            ) from e
        run_cfg = ckpt.get("cfg")  # fairseq's: model + task configs
        cfg = run_cfg["model"] if run_cfg is not None else None
        name = getattr(cfg, "_name", None) or getattr(cfg, "arch", None)
        if cfg is None or "encoder.embed_tokens.weight" not in ckpt["model"] or name not in (
            "xlm_lm",
            *_xlm_arch_names(),
        ):
            raise PretrainedCheckpointError(
                f"{path}: not an xlm_ds pretraining checkpoint (model {name!r}); "
                "expected one written by fairseq-train --task xlm --arch xlm_*/xlmr_*"
            )
        task_state = ckpt.get("task_state") or {}
        languages = [x for x in (getattr(cfg, "languages", "") or "").split(",") if x]
        symbols = list(task_state.get("dictionary_symbols", []))
        task_cfg = run_cfg.get("task")
        return cls(path, cfg, ckpt["model"], languages, symbols, task_cfg.get("data") if task_cfg is not None else None)

    @property
    def has_language_embeddings(self) -> bool:
        return "encoder.embed_langs.weight" in self.state

    def check_dictionary(self, symbols: Sequence[str], where: str) -> None:
        """Refuse a dictionary that is not the pretraining one, naming the
        first differing entry."""
        mine = self.dictionary_symbols
        if not mine:
            n = self.state["encoder.embed_tokens.weight"].shape[0]
            if n != len(symbols):
                raise PretrainedCheckpointError(
                    f"{where}: {len(symbols)} dictionary entries but {self.path} was pretrained with {n}"
                )
            return
        if list(symbols) == mine:
            return
        for i, (a, b) in enumerate(zip(symbols, mine)):
            if a != b:
                detail = f"entry {i} is {a!r} here but {b!r} in pretraining"
                break
        else:
            detail = f"{len(symbols)} entries here, {len(mine)} in pretraining"
        raise PretrainedCheckpointError(
            f"{where}: dictionary differs from the one {self.path} was pretrained with "
            f"({detail}); prepare the data with the pretraining vocabulary: "
            "xlm-ds-prepare ... --spm-model PRETRAIN_DATA/spm.model --dict PRETRAIN_DATA/dict.txt"
        )

    def language_id(self, lang: str, where: str) -> int:
        if lang not in self.languages:
            raise PretrainedCheckpointError(
                f"{where}: language {lang!r} was not seen in pretraining ({self.path} knows "
                f"{', '.join(self.languages) or 'no languages'})"
            )
        return self.languages.index(lang)


def _xlm_arch_names():
    from .architectures import ARCHITECTURES

    return tuple(ARCHITECTURES)
