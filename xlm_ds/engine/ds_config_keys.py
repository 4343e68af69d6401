"""Unknown keys of a DeepSpeed config, found before any process group:
DeepSpeed reads top-level keys with ``dict.get`` (a misspelt
``zero_optimisation`` silently trains without ZeRO) and the plain-dict
sections key by key; the sections it models with pydantic are checked
against DeepSpeed's own models. Each error names the key, its section and
the closest valid spellings."""
import copy
import difflib
import typing
from typing import Any, Dict, List

# Top-level keys DeepSpeed 0.19 reads (DeepSpeedConfig._initialize_params and
# the section parsers it calls; collected by recording every key a config
# lookup asks for, plus the sections read through ``param_dict.keys()``).
KNOWN_TOP_LEVEL = frozenset(
    """
    activation_checkpointing aio amp autotuning bf16 bfloat16 checkpoint comet comms_logger
    communication_data_type compile compression_training csv_monitor curriculum_learning
    data_efficiency data_types dataloader_drop_last datastates_ckpt disable_allgather
    disable_python_gc dump_state eigenvalue elasticity expert_parallel flops_profiler fp16
    gradient_accumulation_steps gradient_allreduce_op gradient_clipping gradient_predivide_factor
    graph_harvesting hybrid_engine log_level managed_gradient_accumulation memory_breakdown
    nebula optimizer pipeline prescale_gradients progressive_layer_drop quantize_training
    scheduler seq_parallel_communication_data_type sequence_parallel_size sparse_attention
    sparse_gradients steps_per_print tensor_parallel tensorboard timers torch_autocast
    train_batch_size train_micro_batch_size_per_gpu use_data_before_expert_parallelism
    vocabulary_size wall_clock_breakdown wandb weight_quantization zero_allow_untested_optimizer
    zero_force_ds_cpu_optimizer zero_optimization
    """.split()
)

# plain-dict sections: DeepSpeed reads them key by key and ignores the rest
DICT_SECTIONS = {
    "optimizer": {"type", "params", "legacy_fusion"},
    "scheduler": {"type", "params"},
    "pipeline": {
        "stages", "partition", "seed_layers", "activation_checkpoint_interval",
        "pipe_partitioned", "grad_partitioned", "use_reentrant",
    },
    "activation_checkpointing": {
        "partition_activations", "contiguous_memory_optimization", "cpu_checkpointing",
        "number_checkpoints", "synchronize_checkpoint_boundary", "profile",
    },
    "flops_profiler": {
        "enabled", "recompute_fwd_factor", "profile_step", "module_depth", "top_modules",
        "detailed", "output_file",
    },
}


def _pydantic_sections() -> Dict[str, type]:
    """Sections DeepSpeed validates with pydantic models (extra keys
    forbidden), checked here before any process group."""
    from deepspeed.comm.config import CommsLoggerConfig
    from deepspeed.monitor.config import CometConfig, CSVConfig, TensorBoardConfig, WandbConfig
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    return {
        "zero_optimization": DeepSpeedZeroConfig,
        "fp16": DeepSpeedFP16Config,
        "bf16": DeepSpeedBF16Config,
        "bfloat16": DeepSpeedBF16Config,
        "tensorboard": TensorBoardConfig,
        "wandb": WandbConfig,
        "csv_monitor": CSVConfig,
        "comet": CometConfig,
        "comms_logger": CommsLoggerConfig,
    }


# --------------------------------------------------------------------------
# unknown keys
# --------------------------------------------------------------------------
def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(key, sorted(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _model_keys(model) -> set:
    keys = set()
    for name, info in model.model_fields.items():
        keys.add(name)
        if info.alias:
            keys.add(info.alias)
    return keys


def _submodel(model, name):
    info = model.model_fields.get(name)
    if info is None:
        for n, i in model.model_fields.items():
            if i.alias == name:
                info = i
                break
    if info is None:
        return None
    candidates = [info.annotation, *typing.get_args(info.annotation)]
    for c in candidates:
        if isinstance(c, type) and hasattr(c, "model_fields"):
            return c
    return None


def _check_pydantic_section(path, section, value, model) -> List[str]:
    import pydantic

    errors = []
    if not isinstance(value, dict):
        return [f"{path}: {section!r} must be a JSON object, not {type(value).__name__}"]
    try:
        model(**copy.deepcopy(value))
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ())]
            where = ".".join([section, *loc])
            if err.get("type") == "extra_forbidden":
                owner = model
                for part in loc[:-1]:
                    owner = _submodel(owner, part) or owner
                errors.append(
                    f"{path}: unknown key {where!r}{_suggest(loc[-1], _model_keys(owner))}"
                )
            else:
                errors.append(f"{path}: {where}: {err.get('msg')} (got {err.get('input')!r})")
    except Exception as exc:  # DeepSpeed's own validators raise plain errors
        errors.append(f"{path}: {section}: {exc}")
    return errors


def check_keys(config: Dict[str, Any], path: str) -> List[str]:
    errors = []
    for key in config:
        if key not in KNOWN_TOP_LEVEL:
            errors.append(f"{path}: unknown top-level key {key!r}{_suggest(key, KNOWN_TOP_LEVEL)}")
    for section, allowed in DICT_SECTIONS.items():
        value = config.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            errors.append(f"{path}: {section!r} must be a JSON object, not {type(value).__name__}")
            continue
        for key in value:
            if key not in allowed:
                errors.append(f"{path}: unknown key '{section}.{key}'{_suggest(key, allowed)}")
    for section, model in _pydantic_sections().items():
        if section in config:
            errors.extend(_check_pydantic_section(path, section, config[section], model))
    return errors
