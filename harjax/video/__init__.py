"""Video clips to embeddings: decoding, the model families, the Extractor, soft prompts, tiny offline models."""
