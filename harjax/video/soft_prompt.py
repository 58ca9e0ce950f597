"""A learned soft prompt on a frozen video-language model: k vectors in its input-embedding space, before the video.

The vectors take the place of k added tokens (<harjax_soft_0> ...) written after the clip's scene context, so every
family's own processor, chat layout and position ids (Qwen's 3-D ones included) stay untouched: a forward hook on
the input embeddings swaps the added tokens' rows for the vectors. data_builders/prompt_tuning.py learns them;
extraction (`--prompt_set=learned --learned_prompt=P`) and prediction from raw clips read them with this module.

A prompt file is safetensors: the tensor `soft_prompt` [k, d] (float32) and, in its header, the metadata that says
what it belongs to (`model`, `family`, `hidden_size`, `protocol`, `base_prompt_set`, ...).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import numpy as np

from harjax import errors

TENSOR = "soft_prompt"
TOKEN = "<harjax_soft_{}>"


def tokens(count: int) -> list[str]:
    """The added tokens the vectors stand in for."""
    return [TOKEN.format(index) for index in range(count)]


def context_with(context: str, count: int) -> str:
    """A clip's context followed by `count` soft tokens: where the context prompt goes, after the scene context."""
    return context + "".join(f"{token} " for token in tokens(count))


def save(path: str, vectors: np.ndarray, metadata: dict[str, Any]) -> None:
    """Writes the prompt file (vectors [k, d] float32; metadata values JSON-encoded in the header)."""
    from safetensors.numpy import save_file

    header = {key: json.dumps(value) for key, value in metadata.items()}
    save_file({TENSOR: np.ascontiguousarray(vectors, np.float32)}, path, metadata=header)


def load(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    """(vectors [k, d] float32, metadata) of a prompt file; a file that is not one is refused by name."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            metadata = {key: json.loads(value) for key, value in (f.metadata() or {}).items()}
            vectors = f.get_tensor(TENSOR)
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        raise errors.UserError(f"--learned_prompt={path}: not a harjax soft prompt ({error})") from None
    if vectors.ndim != 2 or "protocol" not in metadata or "family" not in metadata:
        raise errors.UserError(f"--learned_prompt={path}: expected '{TENSOR}' [k, d] with a protocol and family")
    return vectors.astype(np.float32), metadata


def record(vectors: np.ndarray, metadata: dict[str, Any]) -> dict[str, Any]:
    """What an extraction's metadata.json (so the build and a bundle) keeps of the prompt: all of it, vectors too."""
    data = np.ascontiguousarray(vectors, np.float32).tobytes()
    return {
        **metadata,
        "shape": list(vectors.shape),
        "sha256": hashlib.sha256(data).hexdigest(),
        "vectors_float32_base64": base64.b64encode(data).decode("ascii"),
    }


def from_record(recorded: dict[str, Any]) -> np.ndarray:
    """The vectors [k, d] of a record (record())."""
    data = base64.b64decode(recorded["vectors_float32_base64"])
    return np.frombuffer(data, np.float32).reshape(recorded["shape"]).copy()


class SoftPrompt:
    """The vectors attached to a model: its tokenizer knows the soft tokens, and their embeddings are the vectors.

    `vectors` is a torch Parameter (float32) that prompt tuning trains; the model itself stays frozen.
    """

    def __init__(self, model: Any, processor: Any, vectors: np.ndarray):
        import torch

        count, width = vectors.shape
        embedding = model.get_input_embeddings()
        if width != embedding.weight.shape[1]:
            raise ValueError(
                f"the soft prompt has vectors of size {width}, but the model's input embeddings are "
                f"{embedding.weight.shape[1]} wide: it was learned for another model"
            )
        tokenizer = processor.tokenizer
        tokenizer.add_tokens(tokens(count), special_tokens=True)
        if len(tokenizer) > embedding.weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            embedding = model.get_input_embeddings()
        self.count = count
        self.ids = torch.tensor(tokenizer.convert_tokens_to_ids(tokens(count)), device=embedding.weight.device)
        self.vectors = torch.nn.Parameter(torch.as_tensor(vectors, dtype=torch.float32, device=embedding.weight.device))
        self._hook = embedding.register_forward_hook(self._swap)

    def _swap(self, module: Any, args: tuple, output: Any) -> Any:
        """The embedding layer's output with each soft token's row replaced by its vector."""
        import torch

        ids = args[0]
        if ids.dim() == 0:  # some families embed one id alone to find their placeholder
            return output
        hit = ids.unsqueeze(-1) == self.ids  # [B, L, k]
        if not hit.any():
            return output
        swapped = hit.to(output.dtype) @ self.vectors.to(output.dtype)  # [B, L, d]
        return torch.where(hit.any(-1, keepdim=True), swapped, output)

    def detach(self) -> None:
        """Stops swapping in the vectors (the added tokens stay in the tokenizer)."""
        self._hook.remove()

    def numpy(self) -> np.ndarray:
        """The vectors [k, d] float32."""
        return self.vectors.detach().float().cpu().numpy()
