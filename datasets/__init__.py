"""Dataset readers, synthetic data and augmentation pipelines (never imports models)."""
