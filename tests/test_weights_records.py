"""The sha256 record beside a weights file cannot be bypassed (`weights/integrity.py`)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import hear_matpac
from conftest import TINY_FLAT
from hear_matpac.cli import main
from hear_matpac.weights.integrity import ChecksumError, record_path, weights_sha256, write_record

TINY = TINY_FLAT.read_bytes()
DIGEST = hashlib.sha256(TINY).hexdigest()


def _tampered(folder: Path, name: str = "tiny.pt") -> Path:
    """A copy of the tiny checkpoint with one flipped bit that still loads."""
    data = bytearray(TINY)
    data[len(data) // 2] ^= 1
    path = folder / name
    path.write_bytes(bytes(data))
    hear_matpac.load_model(str(path))  # the format itself does not notice
    return path


def test_tampered_file_with_good_record_is_refused(tmp_path):
    path = _tampered(tmp_path)
    write_record(path, DIGEST)
    with pytest.raises(ChecksumError, match="does not match the digest recorded"):
        hear_matpac.load_model(str(path))


@pytest.mark.parametrize("what", ["directory", "dangling link", "binary", "other file's name", "no name", "two lines"])
def test_anything_at_the_record_path_that_is_not_a_record_of_the_file_is_an_error(tmp_path, what):
    path = _tampered(tmp_path)
    rec = record_path(path)
    if what == "directory":
        rec.mkdir()
    elif what == "dangling link":
        rec.symlink_to(tmp_path / "gone.sha256")
    elif what == "binary":
        rec.write_bytes(b"\xff\xfe\x00" + bytes(range(200)))
    elif what == "other file's name":
        rec.write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  other.pt\n")
    elif what == "no name":
        rec.write_text(f"{DIGEST}\n")
    else:
        rec.write_text(f"{DIGEST}  tiny.pt\n{DIGEST}  tiny.pt\n")
    with pytest.raises(ChecksumError) as caught:
        hear_matpac.load_model(str(path))
    message = str(caught.value)
    assert message.startswith(f"{rec}:") and str(path) in message
    assert main(["info", str(path)]) == 2  # one line, no traceback


def test_record_of_a_symlinks_target_is_checked(tmp_path):
    store, weights = tmp_path / "store", tmp_path / "weights"
    store.mkdir(), weights.mkdir()
    target = _tampered(store, "matpac_10_2048.pt")
    write_record(target, DIGEST)  # recorded when it was good
    link = weights / "matpac_10_2048.pt"
    link.symlink_to(target)
    with pytest.raises(ChecksumError, match="does not match the digest recorded"):
        hear_matpac.load_model(str(link))


def test_record_beside_the_link_is_checked_too(tmp_path):
    target = _tampered(tmp_path, "stored.pt")
    link = tmp_path / "tiny.pt"
    link.symlink_to(target)
    write_record(link, DIGEST)
    with pytest.raises(ChecksumError, match="does not match the digest recorded"):
        hear_matpac.load_model(str(link))


def test_upper_case_digest_and_binary_marker_are_accepted(tmp_path):
    path = tmp_path / "tiny.pt"
    path.write_bytes(TINY)
    record_path(path).write_text(f"{DIGEST.upper()} *tiny.pt\n")
    model = hear_matpac.load_model(str(path))
    assert model.weights_sha256 == DIGEST


def test_weights_sha256_reuses_a_valid_record_and_computes_otherwise(tmp_path):
    path = tmp_path / "tiny.pt"
    path.write_bytes(TINY)
    assert weights_sha256(path) == DIGEST  # computed
    write_record(path, "0" * 64)
    assert weights_sha256(path) == "0" * 64  # the record, not a second read of the file
    record_path(path).write_text("garbage\n")
    with pytest.raises(ChecksumError):
        weights_sha256(path)
