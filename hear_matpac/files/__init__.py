"""Audio files in, embedding files out: decoding (`audio`), decoding ahead in worker processes
(`decode`), PATH arguments (`inputs`), output names (`outputs`), the output folder's settings,
manifest and lock (`store`), embedding many files through the HEAR API (`embed`), `progress`,
`folders`, a torchrun job's ranks (`ranks`) and their shares by audio length (`shard`), and
`job.embed_files`, the library entry that `hear-matpac embed` and the torchrun ranks call."""
