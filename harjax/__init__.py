"""harjax: human activity recognition from wearable sensors and Video-LLaVA embeddings, in JAX/Flax."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("harjax")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "unknown"
