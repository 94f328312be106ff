"""`hear-matpac evaluate` and `sweep`: the HEAR tools per (model, task) stage, resumable.

`specs`: `--model SPEC`s checked, the model key, the stage plans; `task_folders`: task folders
checked, picked, fingerprinted. `claims`: per-stage claims with leases. `tools`: the HEAR tools
as processes (`Tools`, one set per run). `embedding_check`: a plugin's embeddings checked before
predictions read them. `stages`: one stage under its claim (`run_stage`), a model's validation,
their `Outcome`. `engines`: the one seam `Engine.run(plans)`, `local` (this node's slots) and
`slurm` (a job per stage). `run`: `evaluate()`, the synthetic suite, the reports. `sweep`:
`evaluate()` over one generated model per option setting, and each setting's cost.
"""
