"""Training: the pooled (centralised) reference, and the local steps every site runs."""
