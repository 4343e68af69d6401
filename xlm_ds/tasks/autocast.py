"""bf16 autocast for the tasks' steps (``--autocast-bf16``).

fairseq's own ``--bf16`` casts the weights and needs a GPU or TPU (on a CPU
it implies ``--tpu`` and its optimizer wrapper calls ``torch.cuda``). Under
autocast the weights and optimizer stay fp32 and only the matrix products
and their neighbours run in bf16: on CPUs with native bf16 instructions
(AVX512-BF16, AMX) that is the fast path (docs/benchmarks.md), and on a GPU
it is the usual mixed precision without a loss scaler.
"""
from dataclasses import field

import torch


def autocast_bf16_field():
    """The ``--autocast-bf16`` option of a task's dataclass config."""
    return field(default=False, metadata={
        "help": "run forward/backward under torch.autocast(bfloat16) with fp32 weights "
                "and optimizer (works on CPU, where fairseq's --bf16 does not)"})


def bf16_autocast(enabled: bool):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16, enabled=enabled)
