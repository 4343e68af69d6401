"""Loading and checking a DeepSpeed JSON config at start-up, before any
process group exists, so that a mistake costs seconds and says what to fix.

DeepSpeed itself reads top-level keys with ``dict.get`` (a typo such as
``"zero_optimisation"`` is silently ignored and the run trains without
ZeRO), checks the batch-size arithmetic only inside ``deepspeed.initialize``
(after every rank has joined the process group), and refuses ZeRO-2/3 with
pipeline parallelism with a bare assertion. Here:

* file not found / invalid JSON: the file, line and column are named;
* unknown keys, at the top level and inside the sections DeepSpeed models
  with pydantic (``zero_optimization`` with its ``offload_*`` blocks,
  ``bf16``, ``fp16``, the monitors, ...) and the plain-dict sections
  (``optimizer``, ``scheduler``, ``pipeline``, ``activation_checkpointing``):
  the key, its section and the closest valid spellings;
* ``train_batch_size = train_micro_batch_size_per_gpu ×
  gradient_accumulation_steps × data-parallel size`` (data-parallel size =
  world size / pipeline stages), solved for the missing value when only
  some are given, exactly as DeepSpeed does, and written back so that
  DeepSpeed sees the same numbers;
* the fairseq options that say the same thing (``--batch-size``,
  ``--update-freq``, ``--clip-norm``, ``--optimizer``, ``--lr-scheduler``,
  ``--fp16/--bf16``) must agree with the config or be left unset;
* pipeline parallelism with ZeRO stage > 1, offload without stage 3 /
  without ``zero_force_ds_cpu_optimizer: false`` for a client optimizer,
  fp16 and bf16 together, fp16 on a CPU accelerator.
"""
import copy
import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .ds_config_keys import check_keys


class DSConfigError(ValueError):
    """A DeepSpeed config that cannot be used; the message names the file."""


@dataclass
class ResolvedDSConfig:
    """A checked config (``config`` is what is handed to deepspeed) and the
    facts the engine needs from it."""

    path: str
    config: Dict[str, Any]
    world_size: int
    zero_stage: int
    pipeline_stages: int  # 1 = no pipeline
    data_parallel_size: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    train_batch_size: int
    precision: str  # fp32 | bf16 | fp16
    ds_optimizer: bool  # "optimizer" section: DeepSpeed builds the optimizer
    ds_scheduler: bool  # "scheduler" section: DeepSpeed owns the learning rate
    offload_optimizer: bool
    offload_param: bool
    activation_checkpointing: bool
    gradient_clipping: float
    warnings: List[str] = field(default_factory=list)

    @property
    def pipeline(self) -> bool:
        return self.pipeline_stages > 1


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------
def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load(path: str) -> Dict[str, Any]:
    if not path:
        raise DSConfigError("no DeepSpeed config given: pass --deepspeed-config ds_configs/NAME.json")
    if not os.path.isfile(path):
        here = os.path.dirname(path) or "."
        hint = ""
        if os.path.isdir(here):
            names = sorted(n for n in os.listdir(here) if n.endswith(".json"))
            close = difflib.get_close_matches(os.path.basename(path), names, n=3)
            if close:
                hint = f" (did you mean {', '.join(os.path.join(here, c) for c in close)}?)"
            elif names:
                hint = f" ({here} holds {', '.join(names)})"
        raise DSConfigError(f"{path}: DeepSpeed config not found{hint}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        config = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        try:  # DeepSpeed also accepts hjson (comments, trailing commas)
            import hjson

            config = hjson.loads(text, object_pairs_hook=_no_duplicates)
        except Exception:
            raise DSConfigError(
                f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg} (line {e.lineno}, column {e.colno}: "
                f"{text.splitlines()[e.lineno - 1].strip() if 0 < e.lineno <= len(text.splitlines()) else ''!r})"
            ) from None
    except ValueError as e:  # duplicate key
        raise DSConfigError(f"{path}: invalid DeepSpeed config: {e}") from None
    if not isinstance(config, dict):
        raise DSConfigError(f"{path}: a DeepSpeed config is a JSON object, not {type(config).__name__}")
    return config


# --------------------------------------------------------------------------
# the whole check
# --------------------------------------------------------------------------
def _positive_int(config, key, path, errors) -> Optional[int]:
    if key not in config or config[key] in (None, "auto"):
        return None
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        errors.append(f"{path}: {key} must be a positive integer, not {value!r}")
        return None
    return value


def _enabled(config, section) -> bool:
    value = config.get(section)
    return isinstance(value, dict) and bool(value.get("enabled", False))


def _offload_device(zero: dict, key: str) -> bool:
    block = zero.get(key)
    return isinstance(block, dict) and block.get("device", "none") not in (None, "none")


def validate(
    config: Dict[str, Any],
    path: str,
    world_size: int,
    *,
    batch_size: Optional[int] = None,
    update_freq: Optional[Sequence[int]] = None,
    clip_norm: float = 0.0,
    client_optimizer: Optional[str] = None,
    lr_scheduler: str = "fixed",
    lr: Optional[float] = None,
    fairseq_fp16: bool = False,
    fairseq_bf16: bool = False,
    accelerator=None,
) -> ResolvedDSConfig:
    """Check ``config`` (as read from ``path``) for a launch of
    ``world_size`` processes and the fairseq options given; raise
    DSConfigError listing every problem found."""
    config = copy.deepcopy(config)
    errors = check_keys(config, path)
    warnings: List[str] = []
    if os.environ.get("XLM_DS_ALLOW_UNKNOWN_DS_KEYS") == "1":
        warnings.extend(e for e in errors if "unknown" in e)
        errors = [e for e in errors if "unknown" not in e]

    zero = config.get("zero_optimization") or {}
    stage = zero.get("stage", 0) if isinstance(zero, dict) else 0
    if not isinstance(stage, int) or isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        errors.append(f"{path}: zero_optimization.stage must be 0, 1, 2 or 3, not {stage!r}")
        stage = 0

    # ---- pipeline ---------------------------------------------------------
    pipe = config.get("pipeline") if isinstance(config.get("pipeline"), dict) else {}
    stages = pipe.get("stages", "auto")
    if stages in ("auto", None):
        stages = 1
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        errors.append(f"{path}: pipeline.stages must be a positive integer, not {stages!r}")
        stages = 1
    if stages > 1:
        if stage > 1:
            errors.append(
                f"{path}: pipeline parallelism (pipeline.stages={stages}) cannot be combined with "
                f"ZeRO stage {stage}: DeepSpeed's pipeline engine reduces gradients itself and supports "
                "only ZeRO stage 0 or 1; set zero_optimization.stage to 1 (or drop the pipeline section)"
            )
        if world_size % stages != 0:
            errors.append(
                f"{path}: pipeline.stages={stages} does not divide the world size {world_size} "
                "(each data-parallel replica needs all stages)"
            )
        partition = pipe.get("partition", "parameters")
        if partition not in ("parameters", "uniform") and not str(partition).startswith("type:"):
            errors.append(
                f"{path}: pipeline.partition {partition!r}: use 'parameters', 'uniform' or 'type:REGEX'"
            )
    dp = max(1, world_size // stages) if stages <= world_size else 1

    # ---- batch arithmetic -------------------------------------------------
    tb = _positive_int(config, "train_batch_size", path, errors)
    mb = _positive_int(config, "train_micro_batch_size_per_gpu", path, errors)
    gas = _positive_int(config, "gradient_accumulation_steps", path, errors)
    uf = None
    if update_freq is not None:
        uf_list = list(update_freq)
        if len(set(uf_list)) > 1:
            errors.append(f"--update-freq {uf_list}: a per-epoch schedule is not supported with DeepSpeed")
        uf = uf_list[0] if uf_list else None
        if uf == 1:
            uf = None  # fairseq's default: not a request
    if mb is None and batch_size:
        mb = batch_size
    if gas is None and uf:
        gas = uf
    formula = "train_micro_batch_size_per_gpu × gradient_accumulation_steps × data-parallel size"
    dp_text = f"data-parallel size {dp} (world size {world_size}" + (
        f" / {stages} pipeline stages)" if stages > 1 else ")"
    )
    if tb is not None and mb is not None and gas is not None:
        if tb != mb * gas * dp:
            errors.append(
                f"{path}: train_batch_size {tb} != {formula} = {mb} × {gas} × {dp} = {mb * gas * dp} "
                f"with {dp_text}; fix one of them, or drop train_batch_size to have it derived"
            )
    elif tb is not None and mb is not None:
        if tb % (mb * dp):
            errors.append(
                f"{path}: train_batch_size {tb} is not a multiple of train_micro_batch_size_per_gpu {mb} "
                f"× {dp_text.split(' (')[0]} {dp} ({formula}, world size {world_size})"
            )
        else:
            gas = tb // (mb * dp)
    elif tb is not None and gas is not None:
        if tb % (gas * dp):
            errors.append(
                f"{path}: train_batch_size {tb} is not a multiple of gradient_accumulation_steps {gas} "
                f"× data-parallel size {dp} ({formula}, world size {world_size})"
            )
        else:
            mb = tb // (gas * dp)
    elif tb is not None:
        gas = 1
        if tb % dp:
            errors.append(
                f"{path}: train_batch_size {tb} is not a multiple of the data-parallel size {dp} "
                f"(world size {world_size})"
            )
        else:
            mb = tb // dp
    elif mb is not None:
        gas = gas or 1
    else:
        errors.append(
            f"{path}: give train_micro_batch_size_per_gpu (or train_batch_size) in the config, "
            "or --batch-size on the command line"
        )
    if mb is not None and gas is not None:
        tb = mb * gas * dp
        if batch_size and batch_size != mb:
            errors.append(
                f"--batch-size {batch_size} disagrees with {path}: train_micro_batch_size_per_gpu {mb} "
                "(both are sentences per GPU per micro-batch; drop --batch-size or make them equal)"
            )
        if uf and uf != gas:
            errors.append(
                f"--update-freq {uf} disagrees with {path}: gradient_accumulation_steps {gas} "
                "(drop --update-freq or make them equal)"
            )
        config["train_micro_batch_size_per_gpu"] = mb
        config["gradient_accumulation_steps"] = gas
        config["train_batch_size"] = tb

    # ---- precision --------------------------------------------------------
    fp16 = _enabled(config, "fp16")
    bf16 = _enabled(config, "bf16") or _enabled(config, "bfloat16")
    if fp16 and bf16:
        errors.append(f"{path}: fp16 and bf16 are both enabled; enable one")
    if fairseq_fp16 or fairseq_bf16:
        errors.append(
            "--fp16/--bf16 are fairseq's own mixed precision; with DeepSpeed enable "
            f"\"fp16\" or \"bf16\" in {path} instead"
        )
    if fp16 and accelerator is not None and not accelerator.is_fp16_supported():
        errors.append(
            f"{path}: fp16 is enabled but the {accelerator.device_name()} accelerator does not "
            "support it; use a bf16 config on CPU"
        )
    precision = "fp16" if fp16 else "bf16" if bf16 else "fp32"

    # ---- optimizer / scheduler / clipping ----------------------------------
    ds_optimizer = isinstance(config.get("optimizer"), dict)
    ds_scheduler = isinstance(config.get("scheduler"), dict)
    if ds_optimizer and client_optimizer:
        errors.append(
            f"--optimizer {client_optimizer} and {path}'s \"optimizer\" section both choose the optimizer; "
            "keep one"
        )
    if not ds_optimizer and not client_optimizer:
        errors.append(
            f"no optimizer: pass --optimizer adam (a torch optimizer, no compilation) or add an "
            f"\"optimizer\" section to {path}"
        )
    if ds_scheduler and lr_scheduler not in (None, "fixed"):
        errors.append(
            f"--lr-scheduler {lr_scheduler} and {path}'s \"scheduler\" section both schedule the "
            "learning rate; keep one"
        )
    if ds_optimizer and not ds_scheduler and lr is not None:
        ds_lr = (config["optimizer"].get("params") or {}).get("lr")
        if ds_lr is not None and abs(float(ds_lr) - float(lr)) > 1e-12 * max(1.0, abs(float(lr))):
            errors.append(
                f"{path}: optimizer.params.lr {ds_lr} disagrees with --lr {lr}: without a \"scheduler\" "
                f"section fairseq's --lr-scheduler {lr_scheduler} sets the learning rate from --lr "
                "(pass the same --lr, or add a scheduler section)"
            )
    clip = config.get("gradient_clipping", 0.0) or 0.0
    if clip_norm and clip and abs(clip - clip_norm) > 1e-12:
        errors.append(f"--clip-norm {clip_norm} disagrees with {path}: gradient_clipping {clip}")
    elif clip_norm and not clip:
        config["gradient_clipping"] = clip = float(clip_norm)

    # ---- ZeRO offload -----------------------------------------------------
    offload_opt = isinstance(zero, dict) and _offload_device(zero, "offload_optimizer")
    offload_par = isinstance(zero, dict) and _offload_device(zero, "offload_param")
    if offload_par and stage != 3:
        errors.append(f"{path}: zero_optimization.offload_param needs stage 3 (stage is {stage})")
    if offload_opt and stage == 0:
        errors.append(f"{path}: zero_optimization.offload_optimizer needs ZeRO stage 1, 2 or 3")
    if offload_opt and not ds_optimizer and config.get("zero_force_ds_cpu_optimizer", True) is not False:
        errors.append(
            f"{path}: ZeRO-Offload with a client optimizer (--optimizer {client_optimizer}) needs "
            "\"zero_force_ds_cpu_optimizer\": false; otherwise add an \"optimizer\" section "
            "(DeepSpeedCPUAdam, compiled on first use)"
        )
    if stages > 1 and offload_opt:
        warnings.append(f"{path}: optimizer offload with pipeline parallelism is untested here")

    act = isinstance(config.get("activation_checkpointing"), dict)
    if act:
        needs_mp = [k for k in ("partition_activations", "contiguous_memory_optimization", "cpu_checkpointing")
                    if config["activation_checkpointing"].get(k)]
        if needs_mp:
            errors.append(
                f"{path}: activation_checkpointing.{'/'.join(needs_mp)} work on activations partitioned across "
                "tensor-model-parallel ranks, which xlm-ds does not use; set them false"
            )

    if errors:
        raise DSConfigError("\n".join(errors))
    return ResolvedDSConfig(
        path=path,
        config=config,
        world_size=world_size,
        zero_stage=stage,
        pipeline_stages=stages,
        data_parallel_size=dp,
        micro_batch_size=mb,
        gradient_accumulation_steps=gas,
        train_batch_size=tb,
        precision=precision,
        ds_optimizer=ds_optimizer,
        ds_scheduler=ds_scheduler,
        offload_optimizer=bool(offload_opt),
        offload_param=bool(offload_par),
        activation_checkpointing=act,
        gradient_clipping=float(clip),
        warnings=warnings,
    )


def load_and_validate(path: str, world_size: int, **kwargs) -> ResolvedDSConfig:
    return validate(load(path), path, world_size, **kwargs)
