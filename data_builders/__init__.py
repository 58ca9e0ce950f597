"""Dataset builders and the embedding extractor that feed harjax (see data_builders/mmact)."""
