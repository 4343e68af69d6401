"""Follow-up methods of XLM as configurations of the same system (see
docs/methods.md): meta-pretraining phases (Chi et al. 2021), post-pretraining
contrastive alignment and code-switching (Pan et al. 2021), sharing ablations
(Conneau et al. 2020, "Emerging cross-lingual structure"), and the retrieval
and classification evaluations."""
