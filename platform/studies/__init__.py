"""Studies: source images, codec conditions, reference patches, stimuli and triplets, and their generation."""
