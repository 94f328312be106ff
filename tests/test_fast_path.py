"""The fast path: the `compile` option (torch.compile of the encoder, dynamic shapes) gives the
eager numbers within float tolerance and is no part of a model's identity; `precision` and
`compile` given per model to `evaluate --model SPEC` reach the plugin's `load_model`."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import hear_matpac
from hear_matpac.api import embed_packed
from hear_matpac.evaluate.specs import check_model, plan_stages
from hear_matpac.options import option_help, result_options

from conftest import TINY_FLAT

TOLERANCE = 1e-5  # as tests/test_batching.py: float reordering only


def test_compile_is_a_checked_option_that_does_not_change_the_models_identity():
    model = hear_matpac.load_model(str(TINY_FLAT), compile=True)
    assert model.options.compile is True
    assert "compile" not in result_options(model.options) and "torch.compile" in option_help()["compile"]
    assert sorted(model.state_dict()) == sorted(hear_matpac.load_model(str(TINY_FLAT)).state_dict())
    with pytest.raises(TypeError, match="option compile must be true or false"):
        hear_matpac.load_model(str(TINY_FLAT), compile="yes")


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's Inductor needs a C compiler on CPU and there is none")  # fmt: skip
def test_a_compiled_encoder_gives_the_eager_numbers():
    """Clips of several lengths in one call: full windows, tails and short clips, so the
    compiled graph meets several window counts and lengths (dynamic shapes)."""
    generator = torch.Generator().manual_seed(3)
    lengths = [16000, 97280 + 7000, 2 * 97280 + 123, 4000]
    audio = (0.2 * torch.randn(sum(lengths), generator=generator)).clamp(-1, 1)
    eager = embed_packed(audio, lengths, hear_matpac.load_model(str(TINY_FLAT)), timestamps=True)
    compiled_model = hear_matpac.load_model(str(TINY_FLAT), compile=True)
    compiled = embed_packed(audio, lengths, compiled_model, timestamps=True)
    assert compiled_model._compiled is not None
    for a, b in zip(eager, compiled):
        assert (a.scene - b.scene).abs().max() <= TOLERANCE
        assert a.embeddings.shape == b.embeddings.shape
        assert (a.embeddings - b.embeddings).abs().max() <= TOLERANCE
        assert torch.equal(a.timestamps, b.timestamps)


@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"precision": "bf16", "compile": True}])
def test_per_model_options_of_evaluate_reach_load_model(tmp_path, options):
    """`evaluate --model hear_matpac:WEIGHTS:JSON`: the stage carries the options, and the
    embedding runner passes them as heareval does (`load_model(weights, **json.loads(...))`,
    heareval.embeddings.task_embeddings.Embedding)."""
    task = tmp_path / "task"
    task.mkdir()
    spec = check_model(f"hear_matpac:{TINY_FLAT}:{json.dumps(options)}")
    stage, = plan_stages([spec], [task])
    model = hear_matpac.load_model(stage.weights, **json.loads(stage.options_json))
    assert model.options.precision == "bf16"
    assert model.options.compile is options.get("compile", False)
    other = check_model(f"hear_matpac:{TINY_FLAT}")
    assert other.key != spec.key  # bf16 is another model (a result folder of its own)
