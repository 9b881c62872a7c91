"""Linear probes on frozen image features: cached extraction, seeded shot subsets and validation splits, and
the fitting protocols (clip_benchmark's AdamW head, OpenAI's L-BFGS logistic regression)."""
