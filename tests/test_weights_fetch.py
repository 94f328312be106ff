"""`weights fetch` against a local HTTP server on 127.0.0.1 serving the tiny fixtures."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import hear_matpac
from hear_matpac.weights import registry
from hear_matpac.weights import locate as weights_locate
from hear_matpac.cli import main
from hear_matpac.weights.download import DownloadError, RejectedDownload, fetch
from hear_matpac.weights.integrity import ChecksumError, record_path
from hear_matpac.weights.registry import WeightsEntry
from local_http import FileServer, closed_port

ROOT = Path(__file__).resolve().parent.parent
TINY = (ROOT / "hear_matpac" / "assets" / "tiny_untrained.pt").read_bytes()
TINY_FAIRSEQ = (ROOT / "tests" / "fixtures" / "tiny_fairseq.pt").read_bytes()
ENTRY = WeightsEntry("tiny", "test", "tiny untrained", "MATPAC++", "tiny.pt", 608)
URL_PATH = "/MATPAC%2B%2B/tiny.pt"  # the tag is quoted as in the real MATPAC++ URLs
CUT = 1_000_000


@pytest.fixture()
def server():
    with FileServer(files={URL_PATH: TINY}) as srv:
        yield srv


def _fetch(server, folder, entry=ENTRY, **kw):
    kw.setdefault("retries", 0)
    kw.setdefault("timeout", 10)
    return fetch(entry, folder, base_url=server.base_url, progress=False, **kw)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fetch_writes_the_file_and_records_its_sha256(server, tmp_path):
    result = _fetch(server, tmp_path)
    target = tmp_path / "tiny.pt"
    assert result.path == target and result.downloaded and result.recorded
    assert target.read_bytes() == TINY
    digest = hashlib.sha256(TINY).hexdigest()
    assert result.sha256 == digest
    assert record_path(target).read_text() == f"{digest}  tiny.pt\n"
    assert _leftovers(tmp_path) == ["tiny.pt", "tiny.pt.sha256"]
    assert [r.path for r in server.requests] == [URL_PATH]


def test_progress_line_goes_to_stderr(server, tmp_path, capsys):
    fetch(ENTRY, tmp_path, base_url=server.base_url, retries=0, timeout=10)
    err = capsys.readouterr().err
    assert "tiny.pt: 100%" in err and f"{len(TINY) / 1e6:.1f} MB" in err


def test_cut_connection_keeps_part_then_resumes_with_range(server, tmp_path):
    server.cut_after[URL_PATH] = CUT
    with pytest.raises(DownloadError, match=r"run `hear-matpac weights fetch tiny --dir .*` again to resume"):
        _fetch(server, tmp_path)
    assert not (tmp_path / "tiny.pt").exists()
    assert (tmp_path / "tiny.pt.part").read_bytes() == TINY[:CUT]

    result = _fetch(server, tmp_path)
    assert result.downloaded and (tmp_path / "tiny.pt").read_bytes() == TINY
    resumed = server.requests[-1]
    assert resumed.range == f"bytes={CUT}-" and resumed.if_range is not None
    assert _leftovers(tmp_path) == ["tiny.pt", "tiny.pt.sha256"]


def test_retries_resume_within_one_call(server, tmp_path):
    server.cut_after[URL_PATH] = CUT
    result = _fetch(server, tmp_path, retries=1)
    assert result.path.read_bytes() == TINY
    assert [r.range for r in server.requests] == [None, f"bytes={CUT}-"]


def test_file_changed_on_server_restarts_instead_of_splicing(server, tmp_path):
    server.cut_after[URL_PATH] = CUT
    with pytest.raises(DownloadError):
        _fetch(server, tmp_path)
    server.files[URL_PATH] = TINY_FAIRSEQ  # new ETag: If-Range fails, the server sends it all
    result = _fetch(server, tmp_path)
    assert result.path.read_bytes() == TINY_FAIRSEQ


@pytest.mark.parametrize("how", ["html", "html_body"])
def test_html_page_is_rejected_and_nothing_kept(server, tmp_path, how):
    getattr(server, how).add(URL_PATH)
    with pytest.raises(RejectedDownload, match="HTML or XML page"):
        _fetch(server, tmp_path)
    assert _leftovers(tmp_path) == []


def test_truncated_file_is_rejected_and_nothing_kept(server, tmp_path):
    server.files[URL_PATH] = TINY[: len(TINY) // 2]  # complete as served, but not a checkpoint
    with pytest.raises(RejectedDownload, match="not the registered MATPAC checkpoint 'tiny'.*truncated"):
        _fetch(server, tmp_path)
    assert _leftovers(tmp_path) == []


def test_wrong_shape_for_the_name_is_rejected(server, tmp_path):
    wrong = WeightsEntry("tiny", "test", "x", "MATPAC++", "tiny.pt", 992)
    with pytest.raises(RejectedDownload, match="608-frame windows; 'tiny' has 992"):
        _fetch(server, tmp_path, entry=wrong)
    with_head = WeightsEntry("tiny", "test", "x", "MATPAC++", "tiny.pt", 608, head=True)
    with pytest.raises(RejectedDownload, match="classification head; this file has none"):
        _fetch(server, tmp_path, entry=with_head)
    assert _leftovers(tmp_path) == []


def test_mismatch_with_recorded_sha256_is_rejected(server, tmp_path):
    wrong = hashlib.sha256(b"another file").hexdigest()
    record_path(tmp_path / "tiny.pt").write_text(f"{wrong}  tiny.pt\n")
    with pytest.raises(RejectedDownload, match=f"not the sha256 recorded in .*tiny.pt.sha256 \\({wrong}\\)"):
        _fetch(server, tmp_path)
    assert _leftovers(tmp_path) == ["tiny.pt.sha256"]


def test_mismatch_with_published_sha256_is_rejected(server, tmp_path):
    pinned = WeightsEntry("tiny", "test", "x", "MATPAC++", "tiny.pt", 608, sha256="0" * 64)
    with pytest.raises(RejectedDownload, match="not the published sha256"):
        _fetch(server, tmp_path, entry=pinned)
    assert _leftovers(tmp_path) == []


def test_present_file_is_verified_not_fetched_again(server, tmp_path):
    _fetch(server, tmp_path)
    again = _fetch(server, tmp_path)
    assert not again.downloaded and not again.recorded
    assert len(server.requests) == 1
    target = tmp_path / "tiny.pt"
    target.write_bytes(TINY[:-1] + bytes([TINY[-1] ^ 1]))
    with pytest.raises(ChecksumError, match="does not match the digest recorded on first download"):
        _fetch(server, tmp_path)
    assert len(server.requests) == 1


def test_present_file_without_record_is_checked_and_recorded(server, tmp_path):
    (tmp_path / "tiny.pt").write_bytes(TINY)  # e.g. downloaded by hand
    result = _fetch(server, tmp_path)
    assert not result.downloaded and result.recorded
    assert record_path(result.path).read_text().startswith(hashlib.sha256(TINY).hexdigest())
    assert server.requests == []


def test_http_error_says_what_failed_and_how_to_retry(server, tmp_path):
    missing = WeightsEntry("tiny", "test", "x", "MATPAC++", "absent.pt", 608)
    with pytest.raises(
        DownloadError, match=r"HTTP 404 .*No such file on the server.*hear-matpac weights fetch tiny"
    ):
        _fetch(server, tmp_path, entry=missing)
    assert _leftovers(tmp_path) == []


def test_unreachable_server_says_what_failed_and_how_to_retry(tmp_path):
    base = f"http://127.0.0.1:{closed_port()}/"
    with pytest.raises(DownloadError, match=r"could not reach 127\.0\.0\.1.*--base-url"):
        fetch(ENTRY, tmp_path, base_url=base, progress=False, timeout=5)


def test_base_url_from_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv(registry.BASE_URL_ENV, server.base_url)
    result = fetch(ENTRY, tmp_path, progress=False, timeout=10)
    assert result.path.read_bytes() == TINY


def test_cli_fetch_then_load_by_name_verifies_every_use(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry.REGISTRY, "tiny", ENTRY)
    monkeypatch.setenv(weights_locate.WEIGHTS_DIR_ENV, str(tmp_path))
    argv = ["weights", "fetch", "tiny", "--base-url", server.base_url, "--quiet"]
    assert main(argv) == 0
    assert "downloaded tiny to" in capsys.readouterr().out
    assert main(argv) == 0
    assert "not fetched again" in capsys.readouterr().out
    assert len(server.requests) == 1

    model = hear_matpac.load_model("tiny")
    assert Path(model.weights_path) == tmp_path / "tiny.pt"
    reference = hear_matpac.load_model(str(ROOT / "hear_matpac" / "assets" / "tiny_untrained.pt"))
    audio = torch.linspace(-0.5, 0.5, 8000).unsqueeze(0)
    assert torch.equal(
        hear_matpac.get_scene_embeddings(audio, model), hear_matpac.get_scene_embeddings(audio, reference)
    )

    data = bytearray(TINY)
    data[len(data) // 2] ^= 1  # one flipped bit the checkpoint format itself would not notice
    (tmp_path / "tiny.pt").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="tiny.pt: sha256"):
        hear_matpac.load_model("tiny")
    assert main(["info", "tiny"]) == 2
    assert "does not match the digest recorded" in capsys.readouterr().err


def test_cli_reports_network_errors_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry.REGISTRY, "tiny", ENTRY)
    base = f"http://127.0.0.1:{closed_port()}/"
    assert (
        main(["weights", "fetch", "tiny", "--dir", str(tmp_path), "--base-url", base, "--timeout", "5"]) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("hear-matpac weights fetch: error: could not reach")
    assert f"hear-matpac weights fetch tiny --dir {tmp_path} --base-url {base}" in err


def test_complete_part_from_an_earlier_run_is_accepted(server, tmp_path):
    (tmp_path / "tiny.pt.part").write_bytes(TINY)  # e.g. killed while checking the file
    etag = '"' + hashlib.sha256(TINY).hexdigest()[:16] + '"'  # what the local server sends
    (tmp_path / "tiny.pt.part.json").write_text(json.dumps({"url": ENTRY.url(server.base_url), "etag": etag}))
    result = _fetch(server, tmp_path)
    assert result.path.read_bytes() == TINY
    assert [r.range for r in server.requests] == [f"bytes={len(TINY)}-"]  # answered 416: nothing left
    assert _leftovers(tmp_path) == ["tiny.pt", "tiny.pt.sha256"]


def test_part_of_unknown_origin_is_not_resumed(server, tmp_path):
    (tmp_path / "tiny.pt.part").write_bytes(b"\0" * CUT)  # no description: where did it come from?
    result = _fetch(server, tmp_path)
    assert result.path.read_bytes() == TINY
    assert [r.range for r in server.requests] == [None]


def test_concurrent_fetches_into_one_folder_download_once(server, tmp_path):
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: _fetch(server, tmp_path), range(3)))
    assert [r.path for r in server.requests] == [URL_PATH]  # one transfer, two checks of the file
    assert sorted(r.downloaded for r in results) == [False, False, True]
    assert (tmp_path / "tiny.pt").read_bytes() == TINY
    assert _leftovers(tmp_path) == ["tiny.pt", "tiny.pt.sha256"]  # no lock file left behind


@pytest.mark.skipif(not hasattr(os, "O_RDONLY") or sys.platform == "win32", reason="flock is POSIX")
def test_fetch_waits_while_another_holds_the_folder(server, tmp_path, capsys):
    import fcntl

    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(fetch, ENTRY, tmp_path, base_url=server.base_url, retries=0, timeout=10)
        time.sleep(0.5)
        assert not pending.done() and not server.requests
        os.close(fd)  # releases the lock
        result = pending.result(timeout=30)
    assert result.downloaded and (tmp_path / "tiny.pt").read_bytes() == TINY
    assert f"waiting for another fetch into {tmp_path}" in capsys.readouterr().err


@pytest.mark.parametrize("validator", ["weak", "none"])
def test_without_a_usable_validator_a_changed_file_restarts_instead_of_splicing(server, tmp_path, validator):
    server.validator = validator
    server.cut_after[URL_PATH] = CUT
    with pytest.raises(DownloadError):
        _fetch(server, tmp_path)
    server.files[URL_PATH] = TINY_FAIRSEQ  # changed between the two requests
    result = _fetch(server, tmp_path)
    assert result.path.read_bytes() == TINY_FAIRSEQ
    assert server.requests[-1].range is None  # nothing to carry in If-Range: from byte 0


@pytest.mark.parametrize("validator", ["date", "weak+date"])
def test_last_modified_guards_a_resume(server, tmp_path, validator):
    server.validator = validator
    server.cut_after[URL_PATH] = CUT
    with pytest.raises(DownloadError):
        _fetch(server, tmp_path)
    assert _fetch(server, tmp_path).path.read_bytes() == TINY  # unchanged: resumed
    resumed = server.requests[-1]
    assert resumed.range == f"bytes={CUT}-" and resumed.if_range.endswith(" GMT")

    (tmp_path / "tiny.pt").unlink()
    (tmp_path / "tiny.pt.sha256").unlink()
    server.cut_after[URL_PATH] = CUT
    with pytest.raises(DownloadError):
        _fetch(server, tmp_path)
    server.files[URL_PATH] = TINY_FAIRSEQ  # new Last-Modified: If-Range fails, all of it comes
    assert _fetch(server, tmp_path).path.read_bytes() == TINY_FAIRSEQ


def test_206_to_a_request_without_range_restarts_cleanly(server, tmp_path):
    (tmp_path / "tiny.pt.part").write_bytes(b"\0" * CUT)  # stale, of unknown origin
    server.partial_always.add(URL_PATH)
    result = _fetch(server, tmp_path)
    assert server.requests[-1].range is None
    assert result.path.read_bytes() == TINY  # not the stale bytes followed by the file


def test_resumed_html_body_is_sniffed_and_rejected(server, tmp_path):
    server.cut_after[URL_PATH] = CUT
    with pytest.raises(DownloadError):
        _fetch(server, tmp_path)
    server.html_on_resume.add(URL_PATH)
    with pytest.raises(RejectedDownload, match="the body starts like a web page"):
        _fetch(server, tmp_path)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("with_meta", [False, True])
def test_planted_part_symlink_is_refused_and_its_target_untouched(server, tmp_path, with_meta):
    folder, elsewhere = tmp_path / "weights", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_bytes(b"precious")
    (folder / "tiny.pt.part").symlink_to(victim)
    if with_meta:  # as if a resume of the victim's bytes were due
        etag = '"' + hashlib.sha256(TINY).hexdigest()[:16] + '"'
        (folder / "tiny.pt.part.json").write_text(json.dumps({"url": ENTRY.url(server.base_url), "etag": etag}))
    with pytest.raises(DownloadError, match=r"tiny\.pt\.part is a symbolic link to .*victim; refusing"):
        _fetch(server, folder)
    assert victim.read_bytes() == b"precious"
    assert not (folder / "tiny.pt").exists() and not (folder / "tiny.pt").is_symlink()


def test_part_with_another_hard_link_is_refused(server, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.link(victim, tmp_path / "tiny.pt.part")
    with pytest.raises(DownloadError, match="2 hard links; refusing"):
        _fetch(server, tmp_path)
    assert victim.read_bytes() == b"precious"


def test_trickling_server_trips_the_minimum_rate(server, tmp_path):
    server.trickle[URL_PATH] = 1000  # then one byte every 20 ms: 50 B/s
    with pytest.raises(DownloadError) as caught:
        _fetch(server, tmp_path, timeout=0.5)
    message = str(caught.value)
    assert "the transfer stalled" in message and "less than 1 KB/s" in message
    kept = (tmp_path / "tiny.pt.part").stat().st_size
    assert kept >= 1000 and f"{kept} bytes are kept in {tmp_path / 'tiny.pt.part'}" in message
    assert "run `hear-matpac weights fetch tiny --dir" in message


def test_a_server_sending_one_byte_a_second_is_stalled_before_the_first_512_bytes(server, tmp_path):
    """The first read, which gathers 512 bytes to sniff for a web page, is bounded by the same
    stall check: before, it waited for all 512 (here until the server gave up, after 10 s, and
    the error was a broken connection, not a stall)."""
    server.trickle[URL_PATH] = 0
    server.trickle_every = 1.0  # one byte a second from the first
    with pytest.raises(DownloadError) as caught:
        _fetch(server, tmp_path, timeout=1.5)
    message = str(caught.value)
    assert "the transfer stalled" in message and "less than 1 KB/s" in message
    assert "0 bytes are kept" in message  # what came was never sniffed, so never written
    assert not (tmp_path / "tiny.pt.part").exists() and not (tmp_path / "tiny.pt").exists()


def test_cli_fetch_into_a_read_only_folder_or_a_file_is_one_line(server, tmp_path, monkeypatch, capsys, read_only_dir):
    monkeypatch.setitem(registry.REGISTRY, "tiny", ENTRY)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for folder, says in ((read_only_dir, "cannot write into"), (a_file, "is not a folder")):
        argv = ["weights", "fetch", "tiny", "--dir", str(folder), "--base-url", server.base_url, "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hear-matpac weights fetch: error: {folder}" if says == "is not a folder" else
                              f"hear-matpac weights fetch: error: cannot write into {folder}")
        assert says in err and err.count("\n") == 1
    assert list(read_only_dir.iterdir()) == []
