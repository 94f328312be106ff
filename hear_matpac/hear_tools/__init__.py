"""Running the HEAR team's own tools (hear-validator, heareval) on hear_matpac, unmodified.

`install`: the pinned, one-command install of those tools beside hear_matpac.
`tensorflow_standin`: a per-process stand-in for `import tensorflow` where TensorFlow is absent.
`launch`: entry points that run the upstream validator and runners in this process;
`__main__`: `python -m hear_matpac.hear_tools validate|embed|predict`, one tool per process.
`synth_audio` / `tasks`: a small synthetic HEAR task suite (test and demo data).
`slots`: the devices of a node, `--jobs` slots on each, and the thread pool that runs stages on them.
`pipeline` / `sweep`: the staged heareval runs behind `evaluate` and `sweep` (scores are read in
`reports.results`).
"""
