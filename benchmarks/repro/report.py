"""The reproductions' command line (presets, --set, seeds, precision) and
reports (markdown tables, JSON, plots, comparisons of two conditions)."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import Dict, List, Optional, Sequence, Union

from steps import OUT_ROOT, USER_DIR, Steps, fmt, mean_std, write_json


# --------------------------------------------------------------------------
# command line, presets, seeds, reporting


def _precision_module():
    """xlm_ds/cli/precision.py, loaded without importing the xlm_ds package
    (which imports fairseq)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_xlm_ds_precision", os.path.join(USER_DIR, "cli", "precision.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PRECISION = _precision_module()


def precision_flags(preset: dict) -> List[str]:
    return PRECISION.train_flags(preset.get("precision", "fp32"))


def parse_args(doc: str, presets: Dict[str, dict], argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(presets), default="default",
                   help="sizes: 'default' (<= ~60 min on 2 cores) or 'smoke' (1-3 min, proves only that it runs)")
    p.add_argument("--smoke", action="store_const", const="smoke", dest="preset", help="= --preset smoke")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    p.add_argument("--out", default=None, help="output directory (default: benchmarks/out/repro/EXP[-smoke])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one preset value (repeatable), e.g. --set pretrain_updates=2000")
    PRECISION.add_argument(p)
    args = p.parse_args(argv)
    cfg = dict(presets[args.preset])
    for kv in args.set:
        k, _, v = kv.partition("=")
        if k not in cfg:
            p.error(f"--set {k}: not a preset key ({', '.join(sorted(cfg))})")
        cfg[k] = type(cfg[k])(v) if not isinstance(cfg[k], (list, tuple)) else [type(cfg[k][0])(x) for x in v.split(",")]
    cfg["precision"], why = PRECISION.resolve(args.precision)
    print(f"precision: {cfg['precision']} ({why})", flush=True)
    args.cfg = cfg
    args.seed_list = [int(s) for s in str(args.seeds or cfg["seeds"]).split(",") if s]
    return args


def out_dir(args: argparse.Namespace, name: str) -> str:
    d = args.out or os.path.join(OUT_ROOT, name + ("-smoke" if args.preset == "smoke" else ""))
    os.makedirs(d, exist_ok=True)
    return os.path.abspath(d)


def setting(args: argparse.Namespace) -> str:
    """The preset and its --set overrides, for table and plot titles (a
    variant must not be labelled as the plain preset)."""
    return f"{args.preset} preset, {args.cfg['precision']}" + "".join(f", {kv}" for kv in args.set)


def command_line(script: str, args: argparse.Namespace) -> str:
    parts = [f"python benchmarks/repro/{script}"]
    if args.preset != "default":
        parts.append("--smoke" if args.preset == "smoke" else f"--preset {args.preset}")
    if args.seeds:
        parts.append(f"--seeds {args.seeds}")
    parts += [f"--set {shlex.quote(s)}" for s in args.set]
    if args.precision != "auto":
        parts.append(f"--precision {args.precision}")
    if args.out:
        parts.append(f"--out {args.out}")
    return " ".join(parts)


def table(title: str, columns: Sequence[str], rows: Dict[str, Dict[str, Sequence[float]]], digits: int = 2) -> str:
    """Markdown table: one row per condition, mean ± std (n) per column."""
    lines = [f"### {title}", "", "| condition | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for cond, cols in rows.items():
        lines.append(f"| {cond} | " + " | ".join(fmt(cols.get(c, []), digits) for c in columns) + " |")
    return "\n".join(lines)


def beyond_spread(a: dict, b: dict) -> int:
    """+1 / -1 when a's mean ± std interval lies wholly above / below b's
    (the one meaning of "beyond the spread" in docs/results.md), else 0.
    a and b are ``summarise`` cells."""
    if a["mean"] - a["std"] > b["mean"] + b["std"]:
        return 1
    if a["mean"] + a["std"] < b["mean"] - b["std"]:
        return -1
    return 0


def compare(results: Dict[str, Dict[str, dict]], groups: Dict[str, Sequence[str]], a: str, b: str) -> List[dict]:
    """Condition a against b in each column group of a report's JSON: the
    cells where a has the higher mean, and where it is above / below b
    beyond the spread (the counts the results page quotes)."""
    out = []
    for group, cols in groups.items():
        cells = [(results[a][c], results[b][c]) for c in cols if c in results[a] and c in results[b]]
        out.append({"group": group, "cells": len(cells),
                    "higher_mean": sum(x["mean"] > y["mean"] for x, y in cells),
                    "above_beyond_spread": sum(beyond_spread(x, y) == 1 for x, y in cells),
                    "below_beyond_spread": sum(beyond_spread(x, y) == -1 for x, y in cells)})
    return out


def summarise(rows: Dict[str, Dict[str, Sequence[float]]]) -> Dict[str, Dict[str, dict]]:
    out = {}
    for cond, cols in rows.items():
        out[cond] = {}
        for col, vals in cols.items():
            m, s, n = mean_std(vals)
            out[cond][col] = {"mean": m, "std": s, "n": n, "values": list(vals)}
    return out


def plot(path: str, title: str, ylabel: str, groups: Dict[str, Sequence[str]],
         rows: Dict[str, Dict[str, Sequence[float]]]) -> Optional[str]:
    """One panel per group: bars = mean ± std over seeds per condition and
    column, every seed a dot. Needs matplotlib (the ``repro`` extra);
    skipped with a message if absent."""
    try:
        import logging

        logging.getLogger("matplotlib").setLevel(logging.WARNING)  # the root logger may be at DEBUG
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[repro]'): no plot", file=sys.stderr)
        return None
    conds = list(rows)
    ncols = 1 if len(groups) == 1 else 2
    nrows = (len(groups) + ncols - 1) // ncols
    width_in = max(5.0, 0.9 * len(conds) * max(len(c) for c in groups.values()) ** 0.5 + 2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width_in * ncols, 3.6 * nrows), squeeze=False)
    for ax, (gname, columns) in zip(axes.flat, groups.items()):
        width = 0.8 / max(1, len(columns))
        for j, col in enumerate(columns):
            xs, means, stds = [], [], []
            for i, cond in enumerate(conds):
                vals = rows[cond].get(col, [])
                m, sd, n = mean_std(vals)
                x = i + (j - (len(columns) - 1) / 2) * width
                xs.append(x)
                means.append(m if n else 0.0)
                stds.append(sd if n else 0.0)
                ax.scatter([x] * len(vals), vals, s=8, color="black", zorder=3)
            ax.bar(xs, means, width * 0.9, yerr=stds, capsize=3, label=col)
        ax.set_xticks(range(len(conds)))
        ax.set_xticklabels(conds, rotation=15, ha="right", fontsize=7)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(gname, fontsize=9)
        if len(columns) > 1:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path + f".tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def report(name: str, script: str, args, out: str, title: str, ylabel: str, groups: Dict[str, Sequence[str]],
           rows: Dict[str, Dict[str, Sequence[float]]], extra: Optional[dict] = None,
           digits: Union[int, Dict[str, int]] = 2,
           t0: Optional[float] = None, steps: Optional[Steps] = None) -> dict:
    """Prints one table per group (title -> columns), writes OUT/NAME.json
    (config, seeds, per-seed values, mean/std/n, the tables, the command) and
    OUT/NAME.png (one panel per group). ``digits``: decimals of every table,
    or per group title (default 2)."""
    cmd = command_line(script, args)
    text = "\n\n".join(table(f"{title}: {g} ({setting(args)})", cols, rows,
                              digits.get(g, 2) if isinstance(digits, dict) else digits)
                        for g, cols in groups.items())
    print("\n" + text + f"\n\nregenerate: {cmd}")
    result = {"experiment": name, "preset": args.preset, "config": args.cfg, "seeds": args.seed_list,
              "command": cmd, "groups": {g: list(c) for g, c in groups.items()}, "results": summarise(rows),
              "table_markdown": text}
    if extra:
        result.update(extra)
    if t0 is not None:
        result["wall_s_this_invocation"] = round(time.time() - t0, 1)
    if steps is not None:
        result["steps_run"], result["steps_skipped"] = steps.ran, steps.skipped
    json_path = os.path.join(out, f"{name}.json")
    write_json(json_path, result)
    png = plot(os.path.join(out, f"{name}.png"), f"{title} ({setting(args)}, seeds {args.seed_list})", ylabel,
               groups, rows)
    print(f"wrote {json_path}" + (f" and {png}" if png else ""))
    return result
