"""A lab's own recordings: the manifest of clips and sensor files, and aligning the sensor files on a clip."""
