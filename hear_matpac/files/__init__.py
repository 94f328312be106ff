"""Audio files in, embedding files out: decoding (`audio`), PATH arguments (`inputs`), output
names (`outputs`), the output folder's settings, manifest and lock (`store`), embedding many
files through the HEAR API (`embed`), `progress`, `folders`."""
