"""Inside `tf32_enabled` every TF32 getter of torch, old and new, can be read and agrees with
the block's setting, whatever the user set before (nothing, the old API, the new API, or
`set_float32_matmul_precision("high")`), and afterwards the user's state is exactly as it was.
Each setup runs in a fresh interpreter: the switches are process-wide."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from hear_matpac.tf32 import tf32_enabled, tf32_state

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r'''
import json, sys
import torch
from hear_matpac.tf32 import tf32_enabled, tf32_state
b = torch.backends

def getters():
    """Every getter, old and new, with "raises" where it raises."""
    reads = {"get_float32_matmul_precision": torch.get_float32_matmul_precision,
             "cuda.matmul.allow_tf32": lambda: b.cuda.matmul.allow_tf32,
             "cudnn.allow_tf32": lambda: b.cudnn.allow_tf32}
    for name in ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn", "mkldnn", "mkldnn.matmul", "mkldnn.conv"):
        holder = b
        for part in filter(None, name.split(".")):
            holder = getattr(holder, part, None)
        if hasattr(holder, "fp32_precision"):
            reads[(name + ".fp32_precision").lstrip(".")] = lambda h=holder: h.fp32_precision
    out = {}
    for name, read in reads.items():
        try:
            out[name] = read()
        except RuntimeError:
            out[name] = "raises"
    return out

setup = sys.argv[1]
if setup == "old":
    b.cuda.matmul.allow_tf32 = True
    b.cudnn.allow_tf32 = False
elif setup == "new":
    b.fp32_precision = "tf32"
    for holder in (b.cuda.matmul, b.cudnn.conv, b.mkldnn.matmul, b.mkldnn.conv):
        holder.fp32_precision = "tf32"
elif setup == "high":
    torch.set_float32_matmul_precision("high")
before = getters()
model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(12, 2))
seen = []
model.register_forward_pre_hook(lambda module, args: seen.append(getters()))
result = {"before": before, "inside": {}}
for enabled in (False, True):
    with tf32_enabled(enabled):
        model(torch.ones(1, 1, 8))
    result["inside"][str(enabled)] = seen[-1]
result["after"] = getters()
print(json.dumps(result))
'''


def run_setup(setup: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, setup], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("setup", ["nothing", "old", "new", "high"])
def test_every_getter_agrees_inside_and_the_users_state_comes_back(setup):
    seen = run_setup(setup)
    for enabled, inside in seen["inside"].items():
        on = enabled == "True"
        assert "raises" not in inside.values(), (enabled, inside)
        assert inside["cuda.matmul.allow_tf32"] is on and inside["cudnn.allow_tf32"] is on, inside
        assert inside["get_float32_matmul_precision"] == ("high" if on else "highest"), inside
        if "cuda.matmul.fp32_precision" in inside:  # torch >= 2.9
            assert inside["cuda.matmul.fp32_precision"] == inside["cudnn.conv.fp32_precision"] == ("tf32" if on else "ieee")
            assert inside["mkldnn.matmul.fp32_precision"] == inside["mkldnn.conv.fp32_precision"] == "ieee"
    assert seen["after"] == seen["before"]


def test_two_threads_with_different_precisions_never_see_each_others_switch():
    """A thread in an exact (TF32 off) block must see TF32 off the whole time, while another
    thread asks for TF32 on; each block holds the switch until it ends."""
    inside_off = threading.Event()
    wrong = []
    done = threading.Event()

    def exact():
        with tf32_enabled(False):
            inside_off.set()
            for _ in range(200):
                if "tf32" in tf32_state().values() or tf32_state().get("cudnn.allow_tf32"):
                    wrong.append("TF32 on inside an exact block")
                done.wait(0.001)

    def fast():
        inside_off.wait(5)
        with tf32_enabled(True):
            if "tf32" not in tf32_state().values() and not tf32_state().get("cudnn.allow_tf32"):
                wrong.append("TF32 off inside a TF32 block")
            done.wait(0.05)  # stay inside while the exact thread looks, if it still runs
        done.set()

    threads = [threading.Thread(target=exact), threading.Thread(target=fast)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not wrong, wrong[:3]
