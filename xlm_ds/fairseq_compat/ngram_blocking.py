"""fairseq-fixed 0.12.3.1's ``--no-repeat-ngram-size`` does nothing unless
fairseq's CUDA extension is built: the Python fallback takes the n-gram to
check from the end of the whole pre-allocated token buffer, which holds
padding until the last step, not from the end of the hypothesis decoded so
far, so it never finds a repeat (fairseq issue #5206). The fallback is
replaced by one that reads the hypothesis up to the current step; the CUDA
path is left as it is."""
import math


def no_repeat_ngram(self, tokens, lprobs, bsz: int, beam_size: int, step: int):
    """Sets to -inf the log-probability of every token that would complete an
    n-gram already in its hypothesis (``tokens[:, :step + 1]``)."""
    n = self.no_repeat_ngram_size
    for row, hypothesis in enumerate(tokens[:, : step + 1].tolist()):
        prefix = hypothesis[len(hypothesis) - (n - 1):] if n > 1 else []
        banned = [hypothesis[i + n - 1] for i in range(len(hypothesis) - n + 1)
                  if hypothesis[i:i + n - 1] == prefix]
        if banned:
            lprobs[row, banned] = -math.inf
    return lprobs


def apply() -> None:
    from fairseq.ngram_repeat_block import NGramRepeatBlock

    no_repeat_ngram.__wrapped__ = NGramRepeatBlock._no_repeat_ngram
    NGramRepeatBlock._no_repeat_ngram = no_repeat_ngram
