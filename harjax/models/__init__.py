"""Flax modules of the method: sensor encoder, keyless cross-modal attention, fusion Transformer, full model."""
