"""xlm_ds/fairseq_compat: the fairseq fixes are applied by the training
entry points only, and a fairseq whose patched internals changed stops
training at start-up with the name of the patch."""
import gzip
import json
import os
import subprocess
import sys
import textwrap

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Runs TOOL's main in a fresh interpreter after importing the plugin and
# prints which patch targets changed while it ran (and the patches applied).
PROBE = textwrap.dedent("""
    import json, os, sys
    import xlm_ds
    from xlm_ds.fairseq_compat import registry
    def current():
        out = {}
        for p in registry.PATCHES:
            for t in p.targets:
                module, qualname = t.path.split(":")
                obj = __import__(module, fromlist=["_"])
                for part in qualname.split("."):
                    obj = getattr(obj, part)
                out[t.path] = obj
        # the atomic-checkpoints patch replaces the PathManager class that checkpoint_utils uses
        from fairseq import checkpoint_utils
        out["fairseq.checkpoint_utils:PathManager"] = checkpoint_utils.PathManager
        return out
    before = current()
    tool, args = sys.argv[1], json.loads(sys.argv[2])
    if tool == "apply":  # the control: the probe sees a patch when there is one
        registry.apply()
    else:
        import importlib
        rc = importlib.import_module(tool).main(args)
        assert rc in (0, None), rc
    after = current()
    print(json.dumps({"changed": sorted(k for k in before if after[k] is not before[k]),
                      "applied": registry.applied(),
                      "env": os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}))
""")


def probe(tool, *args, cwd=None):
    proc = subprocess.run([sys.executable, "-c", PROBE, tool, json.dumps(list(map(str, args)))],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_prepare_and_score_apply_no_fairseq_patch(tmp_path):
    control = probe("apply")
    assert len(control["changed"]) >= 6 and control["env"] == "1", control
    assert control["applied"] == ["torch-load-pickled-configs", "keep-last-batch", "atomic-checkpoints",
                                  "skip-nonfinite-updates", "cpu-no-repeat-ngram", "join-prefetch-thread"]

    with gzip.open(os.path.join(REPO, "xlm_ds", "sample_corpus", "train.en.gz"), "rt", encoding="utf-8") as f:
        (tmp_path / "mono.en").write_text("".join(line for _, line in zip(range(300), f)), encoding="utf-8")
    prepared = probe("xlm_ds.cli.prepare", "--mono", f"train:en={tmp_path}/mono.en", "--out", tmp_path / "data",
                     "--vocab-size", "300", "--workers", "1", "--quiet")
    assert (tmp_path / "data" / "manifest.json").exists()
    hyp = tmp_path / "gen.txt"
    hyp.write_text("D-0\t-0.5\ta small test\nD-1\t-0.7\tanother one\n")
    ref = tmp_path / "ref.txt"
    ref.write_text("a small test\nanother line\n")
    scored = probe("xlm_ds.cli.score_mt", hyp, "--ref", ref)
    for result in (prepared, scored):
        assert result == {"changed": [], "applied": [], "env": None}, result


def test_changed_fairseq_signature_stops_training_at_start_up(prepared_sample, tmp_path):
    """fairseq-train with a batch_by_size of another signature: the xlm
    task's setup_task refuses before anything is trained or written."""
    script = textwrap.dedent(f"""
        import sys
        from fairseq.data import data_utils
        def batch_by_size(indices, max_tokens=None, max_sentences=None):  # a future fairseq
            raise AssertionError("the old patch ran on the new signature")
        data_utils.batch_by_size = batch_by_size
        from fairseq_cli.train import cli_main
        sys.argv = ["fairseq-train", {prepared_sample!r}, "--user-dir", {os.path.join(REPO, "xlm_ds")!r},
                    "--task", "xlm", "--arch", "xlm_tiny", "--criterion", "xlm_lm", "--cpu", "--max-update", "2",
                    "--batch-size", "4", "--tokens-per-sample", "32", "--save-dir", {str(tmp_path / "ckpt")!r}]
        cli_main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    err = proc.stderr
    assert "FairseqCompatError: xlm-ds cannot apply its fairseq fixes to fairseq" in err, err[-3000:]
    assert "patch 'keep-last-batch'" in err
    assert "fairseq.data.data_utils:batch_by_size('indices', 'max_tokens', 'max_sentences') has changed" in err
    assert "the old patch ran" not in err
    assert not (tmp_path / "ckpt").exists() or not os.listdir(tmp_path / "ckpt")


def test_a_private_field_the_patch_reads_is_checked(monkeypatch):
    from xlm_ds.fairseq_compat import registry

    target = registry.Target("fairseq.data.iterators:BackgroundConsumer.__init__",
                             ("self", "queue", "source", "max_len", "cuda_device"), fields=("self._source",))
    assert registry._mismatch(target) is None
    gone = registry.Target(target.path, target.params, fields=("self._items",))
    assert registry._mismatch(gone) == f"{target.path} no longer uses self._items"
