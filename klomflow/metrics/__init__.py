"""Metrics, numpy and scipy only: margins from logits, per-point KLOM, and the privacy
attacks. Nothing here knows about models, files or the config."""
