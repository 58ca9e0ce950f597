"""MMAct for harjax: layout and classes, sensor repair, the Video-LLaVA extractor, and the TFDS builder.

Importing this package registers the TFDS dataset 'mmact'.
"""

from data_builders.mmact.mmact_dataset_builder import Builder  # noqa: F401  (registers 'mmact')
