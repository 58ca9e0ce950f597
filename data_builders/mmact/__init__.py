"""MMAct: the release's layout and classes, and sensor CSV parsing, repair and resampling.

The TFDS builder, the Video-LLaVA embedding extractor and the synthetic tree generator build on these modules.
"""
