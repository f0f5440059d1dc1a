"""Downloads: served from a loopback HTTP server, verified, written atomically, never trusted."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from bmr_jax import data
from bmr_jax.data.files import DataFile, fetch_file
from bmr_jax.data.registry import DatasetSpec, read_idx_dataset
from bmr_jax.errors import ChecksumMismatchError, DownloadError, MissingDataFileError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serves ``tmp_path / "served"`` on 127.0.0.1; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _served_mnist_copy(data_dir, served):
    spec = data.get_dataset_spec("mnist")
    for f in spec.files:
        (served / f.name).write_bytes((data_dir / "mnist" / f.name).read_bytes())
    return spec


def test_download_verifies_and_caches(data_dir, server, tmp_path, temporary_dataset):
    served, url = server
    mnist = _served_mnist_copy(data_dir, served)
    spec = DatasetSpec(
        name="mnist_served",
        description="MNIST served from loopback",
        files=tuple(
            DataFile(f.name, f.md5, ("http://127.0.0.1:9/", url + f.name)) for f in mnist.files
        ),
        read=read_idx_dataset,
        num_classes=10,
        image_shape=(28, 28, 1),
    )
    temporary_dataset(spec)
    cache = tmp_path / "cache"
    ds = data.load_raw("mnist_served", data_dir=cache, download=True)  # first URL is dead
    assert len(ds.train) == 60000
    assert sorted(p.name for p in (cache / "mnist_served").iterdir()) == sorted(
        f.name for f in spec.files
    )
    # a second load uses the cache: works with the server's files gone and downloads off
    for p in served.iterdir():
        p.unlink()
    assert len(data.load_raw("mnist_served", data_dir=cache, download=False).test) == 10000


def test_wrong_download_leaves_nothing_behind(server, tmp_path):
    served, url = server
    (served / "file.gz").write_bytes(b"these are not the published bytes")
    folder = tmp_path / "cache"
    wanted = DataFile("file.gz", "0" * 32, (url + "file.gz",))
    with pytest.raises(DownloadError, match="file.gz: download failed from every source"):
        fetch_file(folder, wanted, download=True)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_no_source_and_offline(tmp_path, monkeypatch):
    with pytest.raises(MissingDataFileError, match="no download source"):
        fetch_file(tmp_path, DataFile("x.gz", "0" * 32), download=True)
    monkeypatch.setenv("BMR_JAX_OFFLINE", "1")
    with pytest.raises(MissingDataFileError, match="downloads are off"):
        fetch_file(tmp_path, DataFile("x.gz", "0" * 32, ("http://127.0.0.1:9/x.gz",)))


def test_cached_file_with_wrong_checksum_is_refused_before_any_download(tmp_path):
    (tmp_path / "x.gz").write_bytes(b"stale")
    with pytest.raises(ChecksumMismatchError, match="x.gz: md5"):
        fetch_file(
            tmp_path, DataFile("x.gz", "0" * 32, ("http://127.0.0.1:9/x.gz",)), download=True
        )
