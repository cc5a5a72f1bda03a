"""The real download code against a local HTTP server: checksums, retries, resume, caching."""

import hashlib
import os

import pytest

from src.errors import DownloadError
from src.utils.download import download
from tests.helpers import LocalFileServer

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_and_caches(tmp_path):
    with LocalFileServer({"/w.pt": PAYLOAD}) as server:
        dest = download(server.url("/w.pt"), tmp_path / "w.pt", size=len(PAYLOAD), sha256=SHA, backoff=0)
        assert dest.read_bytes() == PAYLOAD
        download(server.url("/w.pt"), tmp_path / "w.pt", size=len(PAYLOAD), sha256=SHA, backoff=0)
        assert len(server.requests) == 1  # the verified copy is reused
        assert not list(tmp_path.glob("*.part"))


def test_a_dropped_connection_is_resumed_with_a_range_request(tmp_path):
    with LocalFileServer({"/w.pt": PAYLOAD}) as server:
        server.truncate["/w.pt"] = 1
        dest = download(server.url("/w.pt"), tmp_path / "w.pt", size=len(PAYLOAD), sha256=SHA, backoff=0)
        assert dest.read_bytes() == PAYLOAD
        assert server.requests[0][1] is None and server.requests[1][1] == f"bytes={len(PAYLOAD) // 2}-"


def test_a_download_that_keeps_failing_leaves_no_file(tmp_path):
    with LocalFileServer({"/w.pt": PAYLOAD}) as server:
        server.truncate["/w.pt"] = 100
        with pytest.raises(DownloadError, match="after 3 attempts"):
            download(server.url("/w.pt"), tmp_path / "w.pt", size=len(PAYLOAD), sha256=SHA, retries=2, backoff=0)
        assert not (tmp_path / "w.pt").exists()
        assert len(server.requests) == 3


def test_a_wrong_checksum_is_refused_and_not_kept(tmp_path):
    with LocalFileServer({"/w.pt": PAYLOAD}) as server:
        with pytest.raises(DownloadError, match="SHA-256"):
            download(server.url("/w.pt"), tmp_path / "w.pt", sha256="0" * 64, retries=0, backoff=0)
        assert not (tmp_path / "w.pt").exists() and not (tmp_path / "w.pt.part").exists()


def test_a_corrupted_cached_file_is_downloaded_again(tmp_path):
    with LocalFileServer({"/w.pt": PAYLOAD}) as server:
        (tmp_path / "w.pt").write_bytes(b"x" * len(PAYLOAD))
        download(server.url("/w.pt"), tmp_path / "w.pt", size=len(PAYLOAD), sha256=SHA, backoff=0)
        assert (tmp_path / "w.pt").read_bytes() == PAYLOAD


def test_missing_file_reports_the_url(tmp_path):
    with LocalFileServer({}) as server, pytest.raises(DownloadError, match="404"):
        download(server.url("/nope.pt"), tmp_path / "n.pt", retries=0, backoff=0)
