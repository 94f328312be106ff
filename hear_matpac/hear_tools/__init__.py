"""Running the HEAR team's own tools (hear-validator, heareval) on hear_matpac, unmodified.

`install`: the pinned, one-command install of those tools beside hear_matpac.
`tensorflow_standin`: a per-process stand-in for `import tensorflow` where TensorFlow is absent.
`launch`: entry points that run the upstream validator and runners in this process (and the
record of the sizes a plugin declares); `__main__`: `python -m hear_matpac.hear_tools
validate|embed|predict`, one tool per process.
`synth_audio` / `tasks`: a small synthetic HEAR task suite (test and demo data).
`environments` / `foreign_launcher` / `model_env`: another environment's interpreter for a
plugin (`--python`): probing it, the stand-alone launcher it runs, `hear-matpac model-env`.
Running these tools per (model, task) stage is `hear_matpac.evaluate`.
"""
