"""Training entry points (the Lightning/Hydra stack builds on these)."""
