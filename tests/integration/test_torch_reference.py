"""The PyTorch reference of benchmarks/ computes what harjax computes, so the speed comparison is of one model."""

import jax
import numpy as np
import pytest
import torch

from benchmarks import torch_reference
from harjax.data import synthetic
from harjax.models import har_model
from harjax.training import parallel, step as step_lib
from tests.conftest import small_config


@pytest.fixture
def setup():
    config = small_config()
    config.model.update(num_layers=2, dropout=0.0)  # dropout streams differ between frameworks
    config.train.update(warmup_steps=1, learning_rate=3e-3)
    data = synthetic.generate(config.data.synthetic, "train", 0)
    batch = {name: array[: config.train.batch_size] for name, array in data.arrays.items()}
    mesh = parallel.make_mesh()
    schedule = step_lib.learning_rate_schedule(config.train)
    state = jax.jit(
        lambda: step_lib.create_train_state(
            har_model.build_model(config, data.num_classes), step_lib.make_optimizer(config, schedule), batch, seed=0
        ),
        out_shardings=parallel.replicated(mesh),
    )()
    reference = torch_reference.HARModel(
        config.model,
        config.loss,
        data.num_classes,
        video_dim=batch["video"].shape[-1],
        sensor_channels=batch["sensor"].shape[-1],
    )
    torch_reference.load_flax_variables(reference, {"params": state.params, "batch_stats": state.batch_stats})
    return config, batch, mesh, schedule, state, reference


def test_reference_has_exactly_harjax_parameters(setup):
    *_, state, reference = setup
    harjax_sizes = sorted(int(np.size(p)) for p in jax.tree.leaves(state.params))
    # torch fuses the attention's q, k, v projections into one in_proj; flax keeps three
    torch_sizes = []
    for name, p in reference.named_parameters():
        torch_sizes += [p.numel() // 3] * 3 if name.endswith(("in_proj_weight", "in_proj_bias")) else [p.numel()]
    assert sorted(torch_sizes) == harjax_sizes


def test_reference_gives_harjax_logits(setup):
    _, batch, _, _, state, reference = setup
    expected = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, batch, train=False).logits
    reference.eval()
    tensors = torch_reference.torch_batch(batch)
    with torch.no_grad():
        logits = reference(tensors["video"], tensors["sensor"], tensors["sensor_mask"])[0]
    np.testing.assert_allclose(logits.numpy(), np.asarray(expected), rtol=1e-4, atol=1e-5)


def test_reference_trains_like_harjax(setup):
    """Loss, backward, clipping, AdamW with masked decay and the schedule: the same losses over three updates."""
    config, batch, mesh, schedule, state, reference = setup
    harjax_step = step_lib.jit_train_step(mesh, config.loss.contrastive_weight)
    reference_step = torch_reference.make_train_step(reference, config, schedule)
    sharded, tensors = parallel.global_batch(batch, mesh), torch_reference.torch_batch(batch)
    harjax_losses, reference_losses = [], []
    for _ in range(4):
        state, metrics = harjax_step(state, sharded)
        harjax_losses.append(float(metrics["loss"]))
        reference_losses.append(float(reference_step(tensors)))
    assert harjax_losses[0] != harjax_losses[-1]  # the updates moved the model
    np.testing.assert_allclose(reference_losses, harjax_losses, rtol=2e-4)
