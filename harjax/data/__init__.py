"""Data sources and the input pipeline; every source yields the batch contract of `harjax.data.batch`."""
