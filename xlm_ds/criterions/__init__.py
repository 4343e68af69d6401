"""fairseq criterions of xlm_ds."""
