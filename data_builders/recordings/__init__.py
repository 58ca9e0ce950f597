"""Any video + wearable dataset from a recordings manifest: extraction, alignment and the TFDS build."""
