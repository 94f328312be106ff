"""`python -m hear_matpac.hear_tools validate|embed|predict ...`: one HEAR tool in this process.

The entry point that `pipeline` spawns, one process per stage (the TensorFlow stand-in and the
predictions runner's settings are per process); the `hear-matpac` command line offers the same
tools to users (`validate`, `heareval embed|predict`).

  validate WEIGHTS [--module M] [--device D] [--tensorflow MODE]   (WEIGHTS '' for none)
  embed [--tensorflow MODE] [--declared FILE] ARGS...   heareval.embeddings.runner ARGS
                                           (FILE: what the model declares, for embedding_check)
  predict [--logs-dir DIR] ARGS...         heareval.predictions.runner ARGS
"""
from __future__ import annotations

import signal
import sys
from typing import List, Optional, Sequence

from .launch import PLUGIN_MODULE, exit_on_sigterm, run_embeddings, run_predictions, run_validator

USAGE = __doc__.split("\n\n")[-1].rstrip('"\n')


def _take(args: List[str], flag: str, default: Optional[str]) -> Optional[str]:
    """Remove `flag VALUE` from the front part of `args`; its value, or `default`."""
    if flag in args:
        at = args.index(flag)
        if at + 1 >= len(args):
            raise SystemExit(f"hear_matpac.hear_tools: {flag} needs a value\n{USAGE}")
        value = args[at + 1]
        del args[at : at + 2]
        return value
    return default


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("validate", "embed", "predict"):
        print(f"usage: python -m hear_matpac.hear_tools\n{USAGE}", file=sys.stderr)
        return 2
    tool = args.pop(0)
    if tool == "predict":
        return run_predictions(args, _take(args, "--logs-dir", None))
    tensorflow = _take(args, "--tensorflow", "auto") or "auto"
    if tool == "embed":
        return run_embeddings(args, tensorflow, _take(args, "--declared", None))
    device = _take(args, "--device", None)
    module = _take(args, "--module", PLUGIN_MODULE) or PLUGIN_MODULE
    if len(args) != 1:
        print(f"usage: python -m hear_matpac.hear_tools\n{USAGE}", file=sys.stderr)
        return 2
    return run_validator(args[0], device, tensorflow, module)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # finally blocks run in every tool
    sys.exit(main())
