"""harjax: human activity recognition from wearable sensors and Video-LLaVA embeddings, in JAX/Flax."""

__version__ = "0.1.0"
