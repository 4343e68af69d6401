"""The demo resumes only the steps that the same command finished: a rerun
with other settings must not silently reuse an old run's result."""
import json
import sys

import pytest

from xlm_ds.cli.demo import done, mark_done, step_seconds


def test_same_command_resumes_and_another_is_refused(tmp_path):
    cmd = [sys.executable, "-m", "fairseq_cli.train", "data", "--max-update", "500"]
    assert not done(str(tmp_path), cmd)
    mark_done(str(tmp_path), cmd, 12.34)
    assert json.loads((tmp_path / "done").read_text()) == {"command": cmd[1:], "seconds": 12.3}
    assert step_seconds(str(tmp_path)) == 12.3
    # another interpreter path, same command: resumed
    assert done(str(tmp_path), ["/other/python"] + cmd[1:])
    with pytest.raises(SystemExit, match=r"(?s)trained by another command.*--max-update 700"):
        done(str(tmp_path), cmd[:-1] + ["700"])


def test_an_older_demos_empty_marker_is_refused_not_reused(tmp_path):
    (tmp_path / "done").write_text("")
    with pytest.raises(SystemExit, match="use another --out or delete it"):
        done(str(tmp_path), [sys.executable, "-m", "fairseq_cli.train"])
