"""ml_collections configs: full.py is the paper's model; each other file is one baseline or ablation of it."""
