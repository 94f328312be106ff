"""`weights export` (.safetensors), `info`, head detection and the registry."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import hear_matpac
from hear_matpac.weights import registry
from hear_matpac.weights import locate as weights_locate
from hear_matpac.weights.read import CheckpointError, load_encoder_weights, read_checkpoint
from hear_matpac.weights.locate import resolve_weights_path
from hear_matpac.cli import main
from hear_matpac.weights.info import describe
from hear_matpac.weights.export import export_safetensors
from hear_matpac.weights.head import find_head
from hear_matpac.weights.integrity import ChecksumError, record_path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "hear_matpac" / "assets" / "tiny_untrained.pt"
FAIRSEQ = ROOT / "tests" / "fixtures" / "tiny_fairseq.pt"
N_CLASSES = 527


def _head_tensors(dim: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "head_norm.running_mean": torch.randn(dim, generator=g),
        "head_norm.running_var": torch.rand(dim, generator=g) + 0.5,
        "head_norm.num_batches_tracked": torch.tensor(1000),
        "head.weight": torch.randn(N_CLASSES, dim, generator=g) * 0.02,
        "head.bias": torch.zeros(N_CLASSES),
    }


@pytest.fixture(scope="module")
def with_head(tmp_path_factory) -> Path:
    """The tiny checkpoint plus an AudioSet head under the published inference code's names."""
    state = torch.load(TINY, weights_only=True)
    state.update(_head_tensors(192))
    path = tmp_path_factory.mktemp("head") / "tiny_with_head.pt"
    torch.save(state, path)
    return path


def _audio(seconds: float = 7.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(2, int(16000 * seconds), generator=g) - 0.5) * 0.5


@pytest.mark.parametrize("src", [TINY, FAIRSEQ], ids=["flat", "training"])
def test_export_round_trip_gives_identical_embeddings(src, tmp_path):
    out = tmp_path / "tiny.safetensors"
    result = export_safetensors(src, out)
    assert result.path == out and not result.head
    audio = _audio()
    pt_model, st_model = hear_matpac.load_model(str(src)), hear_matpac.load_model(str(out))
    pt_emb, pt_ts = hear_matpac.get_timestamp_embeddings(audio, pt_model)
    st_emb, st_ts = hear_matpac.get_timestamp_embeddings(audio, st_model)
    assert torch.equal(pt_emb, st_emb) and torch.equal(pt_ts, st_ts)
    assert st_model.ignored_keys == ()
    with safe_open(str(out), framework="pt") as f:
        keys = set(f.keys())
    assert keys == set(torch.load(TINY, weights_only=True))  # the published flat layout, nothing else


def test_safetensors_matches_reference_outputs(tmp_path):
    out = export_safetensors(TINY, tmp_path / "tiny.safetensors").path
    ref = np.load(ROOT / "tests" / "fixtures" / "tiny_len97520.npz")
    model = hear_matpac.load_model(str(out), layer=0)
    emb, _ = hear_matpac.get_timestamp_embeddings(torch.from_numpy(ref["audio"]), model)
    expected = torch.from_numpy(ref["layers"][:, 0])
    assert emb.shape == expected.shape
    assert (emb - expected).abs().max().item() <= 1e-4


def _mapped_files(tensor: torch.Tensor) -> list[str]:
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs Linux /proc/self/maps")
    pointer = tensor.data_ptr()
    return [
        line.split()[-1] for line in maps.read_text().splitlines()
        if int(line.split("-")[0], 16) <= pointer < int(line.split()[0].split("-")[1], 16)
    ]  # fmt: skip


def test_safetensors_tensors_are_memory_mapped_on_request(tmp_path):
    out = export_safetensors(TINY, tmp_path / "tiny.safetensors").path
    model = hear_matpac.load_model(str(out), mmap=True)
    assert _mapped_files(model.encoder.pos_embed) == [str(out.resolve())]  # a mapping of the file itself
    assert hear_matpac.load_model(str(out), mmap=True).weights_sha256 is None  # no record: not hashed
    assert str(out.resolve()) not in _mapped_files(hear_matpac.load_model(str(out)).encoder.pos_embed)


def _overwrite_tensor_bytes(path: Path) -> None:
    """Rewrite every tensor byte of a .safetensors file in place with zeros (same size, same inode)."""
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(header)
        f.write(bytes(size - header))


@pytest.mark.parametrize("name", ["tiny.safetensors", "tiny.pt"])
def test_loaded_model_does_not_change_when_its_file_does(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        export_safetensors(TINY, path)
    else:
        path.write_bytes(TINY.read_bytes())
    model = hear_matpac.load_model(str(path))
    audio = _audio(2.0)
    before = hear_matpac.get_scene_embeddings(audio, model)
    if name.endswith(".safetensors"):
        mapped = hear_matpac.load_model(str(path), mmap=True)
        _overwrite_tensor_bytes(path)
        assert not mapped.encoder.pos_embed.any()  # the opt-in's risk: the mapped model changed with it
    else:
        path.write_bytes(b"\0" * path.stat().st_size)
    assert torch.equal(hear_matpac.get_scene_embeddings(audio, model), before)
    assert model.weights_sha256 == hashlib.sha256(TINY.read_bytes()).hexdigest() or name.endswith(".safetensors")


def test_head_is_recognised_and_does_not_disturb_the_encoder(with_head):
    raw = read_checkpoint(with_head)
    weights = load_encoder_weights(with_head)
    assert set(weights.ignored_keys) == set(_head_tensors(192))
    head = find_head(raw, with_head, weights.config.embed_dim)
    assert head is not None and head.n_classes == N_CLASSES and head.in_features == 192
    assert find_head(read_checkpoint(TINY), TINY, 192) is None
    assert find_head(read_checkpoint(FAIRSEQ), FAIRSEQ, 192) is None


def test_export_keeps_the_head_unless_asked(with_head, tmp_path):
    full = export_safetensors(with_head, tmp_path / "full.safetensors")
    bare = export_safetensors(with_head, tmp_path / "bare.safetensors", include_head=False)
    assert full.head and not bare.head
    raw = read_checkpoint(full.path)
    for key, value in _head_tensors(192).items():
        assert torch.equal(raw[key], value)
    assert not any(k.startswith("head") for k in read_checkpoint(bare.path))
    assert describe(full.path).head.n_classes == N_CLASSES


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda s: s.pop("head.bias"), "missing head.bias"),
        (lambda s: s.update({"head_norm.weight": torch.ones(192)}), "unexpected head_norm.weight"),
        (
            lambda s: s.update({"head.weight": torch.zeros(N_CLASSES, 96)}),
            r"head.weight has shape \(527, 96\)",
        ),
    ],
    ids=["missing", "affine", "shape"],
)
def test_malformed_head_is_reported_but_encoder_still_loads(change, problem, tmp_path):
    state = torch.load(TINY, weights_only=True)
    state.update(_head_tensors(192))
    change(state)
    path = tmp_path / "bad_head.pt"
    torch.save(state, path)
    hear_matpac.load_model(str(path))  # the HEAR model needs the encoder only
    info = describe(path)
    assert info.head is None and re.search(problem, info.head_problem), info.head_problem
    with pytest.raises(CheckpointError, match=problem):
        export_safetensors(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    export_safetensors(path, tmp_path / "out.safetensors", include_head=False)


def test_export_refuses_bad_output_names(tmp_path):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        export_safetensors(TINY, tmp_path / "out.pt")
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_safetensors(TINY, out)
    assert out.read_bytes() == b"keep me"
    export_safetensors(TINY, out, overwrite=True)
    assert load_encoder_weights(out).config.embed_dim == 192
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]  # no temp file left


def test_truncated_safetensors_is_refused(tmp_path):
    out = export_safetensors(TINY, tmp_path / "tiny.safetensors").path
    data = out.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors: unreadable or truncated safetensors file"):
        hear_matpac.load_model(str(cut))


def test_recorded_sha256_is_checked_on_every_read(tmp_path):
    path = tmp_path / "tiny.pt"
    path.write_bytes(TINY.read_bytes())
    record_path(path).write_text("0" * 64 + "  tiny.pt\n")
    with pytest.raises(ChecksumError, match="tiny.pt: sha256 .* does not match"):
        hear_matpac.load_model(str(path))
    record_path(path).write_text("not a digest\n")
    with pytest.raises(ChecksumError, match="not a sha256 record"):
        hear_matpac.load_model(str(path))


def test_info_reports_shape_parameters_ignored_keys_and_head(with_head, capsys):
    assert main(["info", str(FAIRSEQ), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    state = torch.load(FAIRSEQ, weights_only=True)["model"]
    encoder_keys = [
        k
        for k in state
        if k.startswith("student_encoder.") or k in ("cls_token", "pos_embed") or k.startswith("patch_embed.")
    ]
    assert info["n_params"] == sum(state[k].numel() for k in encoder_keys)
    assert info["config"] == {
        "embed_dim": 192,
        "depth": 3,
        "num_heads": 3,
        "n_freq": 80,
        "n_frames": 608,
        "feature_dim": 960,
    }
    assert sorted(info["ignored_keys"]) == sorted(set(state) - set(encoder_keys))
    assert info["other_entries"] == ["cfg", "extra_state", "optimizer_history"]
    assert info["head"] is None and info["layout"].startswith("training checkpoint")

    assert main(["info", str(with_head)]) == 0
    text = capsys.readouterr().out
    assert "head:        present: BatchNorm1d (no affine) + Linear(192, 527)" in text
    assert "head (2), head_norm (3)" in text


def test_cli_export_then_info(tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    assert main(["weights", "export", str(TINY), str(out)]) == 0
    assert "42 tensors" in capsys.readouterr().out
    assert main(["weights", "export", str(TINY), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "safetensors" in text and "metadata:    source = tiny_untrained.pt" in text


def test_registry_urls_and_readme_table():
    urls = {name: e.url(registry.DOWNLOAD_BASE_URL) for name, e in registry.REGISTRY.items()}
    base = "https://github.com/aurianworld/matpac/releases/download/"
    assert urls == {
        "matpac": base + "Initial_release/matpac_10_2048.pt",
        "matpac-plus": base + "MATPAC%2B%2B/matpac_plus_6s_2048_enconly.pt",
        "matpac-plus-music": base + "MATPAC%2B%2B/matpac_plus_music_6s_2048_enconly.pt",
        "matpac-plus-as": base + "MATPAC%2B%2B/matpac_plus_as_48_1_map_enconly.pt",
        "matpac-plus-as-head": base + "MATPAC%2B%2B/matpac_plus_as_48_1_map_enc_and_head.pt",
    }
    readme = (ROOT / "weights" / "README.md").read_text(encoding="utf-8")
    assert (
        registry.markdown_table() in readme
    ), "weights/README.md is stale: paste `hear-matpac weights list --markdown`"


def test_names_resolve_to_local_files(tmp_path, monkeypatch):
    monkeypatch.setenv(weights_locate.WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="hear-matpac weights fetch matpac-plus-music"):
        resolve_weights_path("matpac-plus-music")
    target = tmp_path / "matpac_plus_music_6s_2048_enconly.pt"
    target.write_bytes(b"")
    assert resolve_weights_path("matpac-plus-music") == target
    monkeypatch.setenv("HEAR_MATPAC_WEIGHTS", "matpac-plus-music")
    assert resolve_weights_path("") == target
    monkeypatch.delenv("HEAR_MATPAC_WEIGHTS")
    (tmp_path / "matpac").write_bytes(b"")  # an existing file wins over the name
    assert resolve_weights_path("matpac") == Path("matpac")
    with pytest.raises(FileNotFoundError, match="weights list"):
        hear_matpac.load_model("no-such-name")


def test_cli_export_into_a_read_only_folder_or_onto_a_folder_is_one_line(tmp_path, capsys, read_only_dir):
    out = read_only_dir / "tiny.safetensors"
    assert main(["weights", "export", str(TINY), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hear-matpac weights export: error: cannot write into {read_only_dir}") and err.count("\n") == 1
    folder = tmp_path / "taken.safetensors"
    folder.mkdir()
    (folder / "keep").write_text("x")
    assert main(["weights", "export", str(TINY), str(folder), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"hear-matpac weights export: error: {folder} is a folder; give the output file's name (ending in .safetensors)"
    assert (folder / "keep").read_text() == "x"
