"""``--precision {auto,bf16,fp32}`` of ``make demo`` and the reproductions.

Both train on the CPU. bf16 is the fast path where the processor computes
it natively: on the reference CPU (AVX512-BF16, no AMX) a bf16 matrix
product runs about 4.3x an fp32 one and a bf16 XLM training step 1.6-2.9x
the fp32 one (docs/benchmarks.md). Without native bf16 instructions oneDNN emulates it
and it is slower than fp32, so ``auto`` picks bf16 only where the CPU flags
say so (x86 ``avx512_bf16`` or ``amx_bf16``, Arm ``bf16``).

Imports nothing but the standard library: the reproductions' helpers load
this file without importing fairseq.
"""
import os
from typing import List, Optional, Tuple

CHOICES = ("auto", "bf16", "fp32")
_NATIVE_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set:
    flags = set()
    if os.path.exists(cpuinfo):
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags |= set(value.split())
    return flags


def native_bf16(flags: Optional[set] = None) -> Tuple[bool, str]:
    """(whether this CPU computes bf16 natively, why)."""
    found = sorted((cpu_flags() if flags is None else flags) & _NATIVE_FLAGS)
    if found:
        return True, f"the CPU has {', '.join(found)}"
    return False, "the CPU has no native bf16 instructions (avx512_bf16, amx_bf16 or Arm bf16)"


def resolve(choice: str, flags: Optional[set] = None) -> Tuple[str, str]:
    """(``bf16`` or ``fp32``, the reason) for ``--precision CHOICE``."""
    if choice not in CHOICES:
        raise ValueError(f"--precision {choice!r}; expected one of {', '.join(CHOICES)}")
    if choice != "auto":
        return choice, "--precision " + choice
    ok, why = native_bf16(flags)
    return ("bf16" if ok else "fp32"), f"--precision auto: {why}"


def train_flags(precision: str) -> List[str]:
    """fairseq-train flags of the xlm_ds tasks (xlm*, xlm_translation) for a
    resolved precision."""
    return ["--autocast-bf16"] if precision == "bf16" else []


def add_argument(parser) -> None:
    parser.add_argument("--precision", choices=CHOICES, default="auto",
                        help="bf16 autocast or fp32 for every training step; auto (default): bf16 where "
                        "the CPU has native bf16 instructions (avx512_bf16, amx_bf16), else fp32")
