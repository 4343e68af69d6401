"""DeepSpeed checkpoint (ZeRO 0-3 or pipeline) -> plain fairseq checkpoint.

The result has the keys of a checkpoint written by fairseq-train (``args``,
``cfg``, ``model``, ``criterion``, ``optimizer_history``, ``task_state``,
``extra_state``, ``last_optimizer_state``), so
``checkpoint_utils.load_model_ensemble_and_task``, fairseq-generate/-validate,
``--init-encoder`` of ``xlm_transformer`` (via ``models/pretrained.py``) and
``--restore-file`` with ``--reset-optimizer`` read it. Weights are fp32:

* ZeRO 1-3: the fp32 master weights, gathered from every rank's optimizer
  shard with DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint``
  (tied weights restored from the checkpoint's ``shared_params``);
* ZeRO 0: the module state of the model-states file (its dtype is the
  training dtype: bf16/fp16 runs without ZeRO keep fp32 masters only in the
  optimizer state, and are upcast here);
* pipeline: the per-layer files ``layer_NN-*model_states.pt``, renamed to
  fairseq's names by the layout saved in the checkpoint (per layer: its own
  key prefix and the encoder's); the tied output projection is
  ``encoder.lm_head.weight`` = ``encoder.embed_tokens.weight``.

No optimizer state is exported (``last_optimizer_state`` is None): resume a
DeepSpeed run from its DeepSpeed checkpoint.
"""
import glob
import logging
import os
from typing import Any, Dict, Optional

import torch

from ..reliability.fairseq_checkpoints import torch_persistent_save
from .checkpoint_dir import CheckpointDir, CheckpointLookupError

logger = logging.getLogger("xlm_ds.export")


class ExportError(ValueError):
    pass


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _fp32(state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if torch.is_tensor(v):
            out[k] = v.detach().float().clone() if v.is_floating_point() else v.detach().clone()
    return out


def _pipeline_state_dict(tag_dir: str, info: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    layout = info.get("pipeline_layout")
    if not layout:
        raise ExportError(f"{tag_dir}: pipeline checkpoint without a layer layout")
    state: Dict[str, torch.Tensor] = {}
    for idx, entry in enumerate(layout):
        if not entry:
            continue  # the tied projection: no state of its own
        own, prefix = ("", entry) if isinstance(entry, str) else entry  # str: checkpoints before 2026-12-06
        files = sorted(glob.glob(os.path.join(tag_dir, f"layer_{idx:02d}-*model_states.pt")))
        if not files:
            raise ExportError(f"{tag_dir}: layer {idx} ({prefix}) has no layer_{idx:02d}-*model_states.pt")
        for key, value in _fp32(_load(files[0])).items():
            if key.startswith(own):
                state[prefix + key[len(own):]] = value
    if "encoder.embed_tokens.weight" not in state:
        raise ExportError(f"{tag_dir}: no token embedding in the pipeline layers")
    state["encoder.lm_head.weight"] = state["encoder.embed_tokens.weight"]
    return state


def consolidate(checkpoint: str, tag: Optional[str] = None) -> Dict[str, Any]:
    """The fairseq checkpoint dict of a DeepSpeed checkpoint written by
    xlm-ds-train."""
    try:
        ckpt, tag = CheckpointDir.lookup(checkpoint, tag)
    except CheckpointLookupError as e:
        raise ExportError(str(e)) from None
    tag_dir = ckpt.tag_dir(tag)
    model_states = _load(CheckpointDir.model_states_file(tag_dir))
    info = model_states.get("xlm_ds")
    if info is None:
        raise ExportError(f"{tag_dir}: no xlm_ds state (not written by xlm-ds-train)")
    stage = int(info.get("zero_stage", 0))
    logger.info("%s: %s checkpoint, ZeRO stage %d, %s, %d updates", tag_dir,
                "pipeline" if info.get("pipeline") else "data-parallel", stage, info.get("precision"),
                info.get("num_updates", 0))
    if info.get("pipeline"):
        model = _pipeline_state_dict(tag_dir, info)
    elif stage >= 1:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        logger.info("gathering fp32 weights from %d ZeRO shard(s)",
                    len(glob.glob(os.path.join(tag_dir, "*optim_states.pt"))))
        model = get_fp32_state_dict_from_zero_checkpoint(ckpt.path, tag=tag)
        model = {k: (v.float() if v.is_floating_point() else v) for k, v in model.items()}
    else:
        module = model_states.get("module")
        if module is None:
            raise ExportError(f"{tag_dir}: model-states file holds no module weights")
        model = _fp32(module)
    extra_state = dict(info.get("extra_state") or {})
    extra_state.pop("metrics", None)
    return {
        "args": None,
        "cfg": info["cfg"],
        "model": model,
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": info.get("criterion_name"),
                "optimizer_name": info.get("optimizer_name"),
                "lr_scheduler_state": info.get("lr_scheduler_state") or {},
                "num_updates": int(info.get("num_updates", 0)),
            }
        ],
        "task_state": info.get("task_state") or {},
        "extra_state": extra_state,
        "last_optimizer_state": None,
    }


def export(checkpoint: str, out: str, tag: Optional[str] = None, check: bool = True) -> Dict[str, Any]:
    """Write the fairseq checkpoint to ``out`` (atomically); with ``check``,
    verify that fairseq can rebuild the model from it (the data directory
    of the run is not needed)."""
    state = consolidate(checkpoint, tag)
    if check:
        check_loadable(state)
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    torch_persistent_save(state, out)  # temp file + fsync + rename
    return state


def check_loadable(state: Dict[str, Any]) -> None:
    """Build the model of ``state['cfg']`` and load ``state['model']`` into
    it strictly (what fairseq's loader does after setting up the task)."""
    from omegaconf import OmegaConf

    from ..interop import InteropError
    from ..interop.checkpoint import build_xlm_model

    cfg = OmegaConf.create(state["cfg"])
    symbols = state["task_state"].get("dictionary_symbols")
    if not symbols:
        raise ExportError("exported checkpoint has no task_state.dictionary_symbols")
    try:
        with torch.device("meta"):
            model = build_xlm_model(cfg.model, symbols)
    except InteropError as e:
        raise ExportError(f"exported checkpoint: {e}") from None
    missing, unexpected = torch.nn.Module.load_state_dict(model, state["model"], strict=False, assign=True)
    if missing or unexpected:
        raise ExportError(f"exported weights do not fit the model: missing {missing}, unexpected {unexpected}")
