"""Checkpoint variants load to the same model; bad files are refused with clear errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import hear_matpac
from conftest import TINY_FAIRSEQ, TINY_FLAT, reference
from hear_matpac.weights.read import CheckpointError

CLIP = torch.from_numpy(reference(17120)["audio"])


@pytest.fixture(scope="module")
def flat_state():
    return torch.load(TINY_FLAT, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def expected(flat_state):
    return hear_matpac.load_model(str(TINY_FLAT)).column_features(CLIP)


def save(tmp_path: Path, obj, name: str = "ckpt.pt") -> str:
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def test_training_checkpoint_ignores_training_keys(expected):
    model = hear_matpac.load_model(str(TINY_FAIRSEQ))
    assert torch.equal(model.column_features(CLIP), expected)
    assert "_ema" in model.ignored_keys
    assert any(key.startswith("decoder.") for key in model.ignored_keys)


@pytest.mark.parametrize("prefix", ["module.", "model.", "module.model."])
def test_prefixed_keys_load(tmp_path, flat_state, expected, prefix):
    prefixed = {prefix + key: value for key, value in flat_state.items()}
    path = save(tmp_path, {"model": prefixed, "cfg": {}})
    assert torch.equal(hear_matpac.load_model(path).column_features(CLIP), expected)


def test_heads_and_teacher_keys_are_ignored(tmp_path, flat_state, expected):
    extra = dict(flat_state)
    extra["head.weight"] = torch.zeros(527, 192)
    extra["teacher_encoder.blocks.0.norm1.weight"] = torch.zeros(192)
    assert torch.equal(hear_matpac.load_model(save(tmp_path, extra)).column_features(CLIP), expected)


def test_half_precision_checkpoint_runs_in_float32(tmp_path, flat_state, expected):
    path = save(tmp_path, {k: v.half() for k, v in flat_state.items()})
    features = hear_matpac.load_model(path).column_features(CLIP)
    assert features.dtype == torch.float32 and (features - expected).abs().max() < 0.05


def test_config_is_inferred_from_tensors_not_name(tmp_path, flat_state):
    path = save(tmp_path, flat_state, name="matpac_vit_base_768_12.pt")
    config = hear_matpac.load_model(path).encoder.config
    assert (config.embed_dim, config.depth, config.num_heads, config.n_frames) == (192, 3, 3, 608)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        hear_matpac.load_model(str(tmp_path / "nope.pt"))


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"<html>404 Not Found</html>" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt.*unreadable"):
        hear_matpac.load_model(str(path))


def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.pt"
    path.write_bytes(TINY_FLAT.read_bytes()[: TINY_FLAT.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt.*unreadable or truncated"):
        hear_matpac.load_model(str(path))


class _Payload:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_pickled_code_is_never_run(tmp_path, flat_state):
    marker = tmp_path / "code-ran"
    path = save(tmp_path, {**flat_state, "payload": _Payload(str(marker))})
    with pytest.raises(CheckpointError, match="pickled objects other than tensors .it references os.makedirs"):
        hear_matpac.load_model(path)
    assert not marker.exists()


def test_not_a_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="expected a state dict"):
        hear_matpac.load_model(save(tmp_path, torch.zeros(3)))


def test_no_encoder_keys(tmp_path):
    with pytest.raises(CheckpointError, match="not a MATPAC encoder checkpoint: missing cls_token"):
        hear_matpac.load_model(save(tmp_path, {"weight": torch.zeros(3)}))


def test_wrong_shape_is_named(tmp_path, flat_state):
    bad = dict(flat_state)
    bad["student_encoder.blocks.2.attn.qkv.weight"] = torch.zeros(576, 191)
    with pytest.raises(CheckpointError, match=r"blocks\.2\.attn\.qkv\.weight has shape \(576, 191\)"):
        hear_matpac.load_model(save(tmp_path, bad))


def test_missing_block_tensor_is_named(tmp_path, flat_state):
    bad = {k: v for k, v in flat_state.items() if k != "student_encoder.blocks.1.mlp.fc2.bias"}
    with pytest.raises(CheckpointError, match=r"missing: blocks\.1\.mlp\.fc2\.bias"):
        hear_matpac.load_model(save(tmp_path, bad))


def test_missing_final_norm_is_named(tmp_path, flat_state):
    bad = {k: v for k, v in flat_state.items() if not k.startswith("student_encoder.norm.")}
    with pytest.raises(CheckpointError, match=r"missing: norm\.bias, norm\.weight"):
        hear_matpac.load_model(save(tmp_path, bad))


def test_gap_in_blocks(tmp_path, flat_state):
    bad = {k: v for k, v in flat_state.items() if ".blocks.1." not in k}
    with pytest.raises(CheckpointError, match=r"numbered 0..depth-1, found \[0, 2\]"):
        hear_matpac.load_model(save(tmp_path, bad))


def test_unexpected_encoder_tensor(tmp_path, flat_state):
    bad = {**flat_state, "student_encoder.blocks.0.attn.q_norm.weight": torch.ones(64)}
    with pytest.raises(CheckpointError, match=r"unexpected encoder tensors: blocks\.0\.attn\.q_norm"):
        hear_matpac.load_model(save(tmp_path, bad))


def test_positional_table_not_whole_columns(tmp_path, flat_state):
    bad = {**flat_state, "pos_embed": torch.zeros(1, 190, 192)}
    with pytest.raises(CheckpointError, match="pos_embed has 190 entries"):
        hear_matpac.load_model(save(tmp_path, bad))


def test_environment_variable_is_used(monkeypatch, expected):
    monkeypatch.setenv("HEAR_MATPAC_WEIGHTS", str(TINY_FAIRSEQ))
    model = hear_matpac.load_model()
    assert model.weights_path == str(TINY_FAIRSEQ)
    assert torch.equal(model.column_features(CLIP), expected)


def test_no_weights_anywhere_says_where_to_get_them(no_weights_found):
    with pytest.raises(FileNotFoundError, match=r"HEAR_MATPAC_WEIGHTS.*releases/download/Initial_release/matpac_10_2048\.pt"):
        hear_matpac.load_model("")


def test_default_weights_under_cwd(no_weights_found, tmp_path, flat_state, expected):
    (tmp_path / "weights").mkdir()
    save(tmp_path / "weights", flat_state, name="matpac_10_2048.pt")
    assert torch.equal(hear_matpac.load_model().column_features(CLIP), expected)


def sincos_table(dim: int, rows: int, cols: int) -> np.ndarray:
    """MAE-style fixed 2-D sin-cos positional table (rows = frequency, cols = time), no cls."""

    def one_axis(d: int, positions: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        angles = np.outer(positions.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    cols_grid, rows_grid = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))
    return np.concatenate([one_axis(dim // 2, cols_grid), one_axis(dim // 2, rows_grid)], axis=1)


def test_sincos_builder_reproduces_the_fixture_table(flat_state):
    table = flat_state["pos_embed"][0, 1:].numpy()
    assert np.abs(sincos_table(192, 5, 38) - table).max() < 1e-6


def test_992_frame_checkpoint_loads_and_runs(tmp_path, flat_state):
    table = np.concatenate([np.zeros((1, 192)), sincos_table(192, 5, 62)])
    state = {**flat_state, "pos_embed": torch.from_numpy(table).float()[None]}
    model = hear_matpac.load_model(save(tmp_path, state, name="finetuned.pt"))
    assert model.encoder.config.n_frames == 992 and model.encoder.config.max_columns == 62
    audio = torch.from_numpy(reference(212800)["audio"])  # 1328 frames: one 992 window + 336
    features = model.column_features(audio)
    assert features.shape == (2, 83, 960)
    mel = model.frontend(audio)[:, None, :, :992]
    first_window = model.encoder(mel, model.encoder.config.depth - 1)
    assert (features[:, :62] - first_window).abs().max() <= 1e-5
    embeddings, timestamps = hear_matpac.get_timestamp_embeddings(audio, model)
    assert embeddings.shape == (2, 83, 960) and timestamps[0, -1].item() == 160 * 82 + 87.5


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_encoder_tensor_is_refused_naming_the_first(tmp_path, flat_state, value):
    bad = dict(flat_state)
    for key in ("student_encoder.blocks.1.mlp.fc1.weight", "student_encoder.blocks.2.norm1.bias"):
        bad[key] = bad[key].clone()
        bad[key].view(-1)[3] = value
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc1\.weight holds 1 NaN or infinite value"):
        hear_matpac.load_model(save(tmp_path, bad))


def test_two_keys_for_one_tensor_after_prefix_stripping_are_refused(tmp_path, flat_state):
    both = {**flat_state, "module.cls_token": flat_state["cls_token"] + 1}
    with pytest.raises(CheckpointError, match=r"ambiguous: 'cls_token' and 'module.cls_token' are both the encoder's cls_token"):
        hear_matpac.load_model(save(tmp_path, both))


def test_flat_dict_with_a_model_entry_too_is_refused(tmp_path, flat_state):
    both = {**flat_state, "model": {k: v + 1 for k, v in flat_state.items()}}
    with pytest.raises(CheckpointError, match=r"ambiguous: encoder tensors both under 'model' and at the top level \(cls_token"):
        hear_matpac.load_model(save(tmp_path, both))


def test_two_keys_for_one_head_tensor_are_refused(tmp_path, flat_state):
    from hear_matpac.weights.head import find_head

    raw = {**flat_state, "head.bias": torch.zeros(5), "module.head.bias": torch.ones(5)}
    with pytest.raises(CheckpointError, match=r"'head.bias' and 'module.head.bias' are both the head's head.bias"):
        find_head(raw, "x.pt", 192)
