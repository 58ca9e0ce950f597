"""ml_collections configs: full.py is the paper's model; each other file is one baseline or ablation of it.

Each takes the argument --config=configs/FILE.py:[VARIANT][,size=SIZE] (common.py: the parser and the sizes).
"""
