"""``--no-repeat-ngram-size`` on a CPU (fairseq_compat's cpu-no-repeat-ngram
patch): the blocker bans exactly the tokens a brute-force search over the
hypothesis finds, and fairseq-generate's hypotheses then hold no repeated
bigram where the same model's do without it."""
import os
import random

import pytest
import torch
from fairseq.ngram_repeat_block import NGramRepeatBlock

from xlm_ds.fairseq_compat.ngram_blocking import no_repeat_ngram

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAD = 1


def banned_by_search(hypothesis, n):
    """Tokens t such that hypothesis + [t] ends in an n-gram seen before."""
    seen = {tuple(hypothesis[i:i + n]) for i in range(len(hypothesis) - n + 1)}
    tail = tuple(hypothesis[len(hypothesis) - (n - 1):]) if n > 1 else ()
    return {gram[-1] for gram in seen if gram[:-1] == tail}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_bans_what_a_search_of_the_hypothesis_finds(n):
    rng = random.Random(n)
    vocab, rows, max_len = 7, 6, 12
    for step in range(max_len):
        # fairseq's buffer: the hypotheses so far, then padding to max_len + 2
        tokens = torch.full((rows, max_len + 2), PAD, dtype=torch.long)
        tokens[:, : step + 1] = torch.tensor([[rng.randrange(2, vocab) for _ in range(step + 1)] for _ in range(rows)])
        lprobs = torch.zeros(rows, vocab)
        blocker = NGramRepeatBlock(n, use_extension=False)
        out = no_repeat_ngram(blocker, tokens, lprobs.clone(), rows // 2, 2, step)
        for row in range(rows):
            expected = banned_by_search(tokens[row, : step + 1].tolist(), n)
            assert set(torch.nonzero(out[row] == -float("inf")).flatten().tolist()) == expected, (n, step, row)


def test_fairseq_generate_blocks_repeated_bigrams(prepared_sample, run_fairseq, tmp_path):
    # an untrained model babbles in loops: the control that repeats exist
    run_fairseq(
        "train", prepared_sample, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm_translation",
        "-s", "de", "-t", "en", "--arch", "xlm_transformer_tiny", "--max-tokens", "2500",
        "--optimizer", "adam", "--lr", "1e-9", "--max-update", "1", "--cpu", "--save-dir", tmp_path,
        "--no-epoch-checkpoints", "--disable-validation",
    )

    def hypotheses(*flags):
        log = run_fairseq(
            "generate", prepared_sample, "--user-dir", os.path.join(REPO, "xlm_ds"), "--task", "xlm_translation",
            "-s", "de", "-t", "en", "--gen-subset", "valid", "--path", tmp_path / "checkpoint_last.pt",
            "--beam", "2", "--batch-size", "64", "--max-len-a", "0", "--max-len-b", "20", "--cpu", *flags,
        )
        return [line.split("\t")[2].split() for line in log.splitlines() if line.startswith("H-")]

    def repeats_a_bigram(pieces):
        bigrams = list(zip(pieces, pieces[1:]))
        return len(set(bigrams)) < len(bigrams)

    free = hypotheses()
    blocked = hypotheses("--no-repeat-ngram-size", "2")
    assert len(free) == len(blocked) == 300
    # the control: 22 of the 300 untrained hypotheses repeat a bigram (seen 2026-12-07)
    assert sum(map(repeats_a_bigram, free)) >= 10, "the control: the untrained model should loop"
    assert not [h for h in blocked if repeats_a_bigram(h)]
