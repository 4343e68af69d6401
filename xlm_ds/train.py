"""``python -m xlm_ds.train`` = ``xlm-ds-train`` (for torchrun / deepspeed launchers)."""
import sys

from xlm_ds.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
