"""Training: the loop, the jitted step, losses, data parallelism, checkpoints, augmentation and what a run logs."""
