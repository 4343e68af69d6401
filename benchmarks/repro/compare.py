"""Counts one condition against another in a repro result JSON, group by
group: cells with the higher mean and cells beyond the spread (mean ± std
intervals apart), the counts docs/results.md quotes.

    python benchmarks/repro/compare.py benchmarks/out/repro/exp2_alignment/exp2_alignment.json MLM+TLM MLM
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as C  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("result", help="EXP.json written by a benchmarks/repro script")
    p.add_argument("a", help="condition (row name) to count for")
    p.add_argument("b", help="condition (row name) to count against")
    args = p.parse_args(argv)
    result = C.read_json(args.result)
    for name in (args.a, args.b):
        if name not in result["results"]:
            p.error(f"{args.result}: no condition {name!r} (has: {', '.join(result['results'])})")
    rows = C.compare(result["results"], result["groups"], args.a, args.b)
    print(f"{args.a} vs {args.b} ({result['command']})")
    print("| group | cells | higher mean | above beyond spread | below beyond spread |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['group']} | {r['cells']} | {r['higher_mean']} | {r['above_beyond_spread']} | "
              f"{r['below_beyond_spread']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
