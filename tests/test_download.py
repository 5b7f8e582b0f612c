"""Tests for asr_pipeline.download against a real HTTP server on localhost.

The tarballs are built at test time from the shared dev-clean-2 copy, so nothing is fetched from
the internet and every failure mode (bad checksum, truncated transfer, refused connection, hostile
archive) is exercised end to end, including the promise that a failure leaves the root empty.
"""

from __future__ import annotations

import functools
import hashlib
import io
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asr_pipeline.corpus.download import (
    OPENSLR_SUBSETS,
    DownloadError,
    ensure_subsets,
    subset_present,
)
from tests.support import free_port, librispeech_path

SUBSET = "dev-clean-2"
RESOURCE = 31


@pytest.fixture(scope="module")
def source_subset() -> Path:
    """The shared dev-clean-2 folder the test tarballs are built from."""
    librispeech = librispeech_path()
    folder = librispeech / SUBSET
    if not subset_present(librispeech, SUBSET):
        pytest.skip(f"shared LibriSpeech not found at {folder}: set LIBRISPEECH_DIR")
    return folder


def _relative_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _make_tarball(
    serve_dir: Path,
    source: Path,
    *,
    arcname: str = f"LibriSpeech/{SUBSET}",
    extra: Callable[[tarfile.TarFile], None] | None = None,
) -> Path:
    """Write serve_dir/31/dev-clean-2.tar.gz laid out like the OpenSLR tarball."""
    path = serve_dir / str(RESOURCE) / f"{SUBSET}.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        readme = b"LibriSpeech test README\n"
        info = tarfile.TarInfo("LibriSpeech/README.TXT")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
        tar.add(source, arcname=arcname)
        if extra is not None:
            extra(tar)
    return path


class _Server:
    """A localhost HTTP server in a daemon thread that counts the requests it receives."""

    def __init__(self, directory: Path, truncate: bool = False) -> None:
        self.requests = 0
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep pytest output clean

            def do_GET(self) -> None:
                server.requests += 1
                if not truncate:
                    super().do_GET()
                    return
                # Promise a megabyte, deliver 100 bytes, hang up: a broken connection.
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(1 << 20))
                self.end_headers()
                self.wfile.write(b"\x1f\x8b" + b"\0" * 98)
                self.wfile.flush()
                self.close_connection = True

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    """Start servers on demand; all of them are shut down at teardown."""
    servers: list[_Server] = []

    def start(directory: Path, truncate: bool = False) -> _Server:
        servers.append(_Server(directory, truncate=truncate))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty LibriSpeech root that the download targets."""
    path = tmp_path / "root"
    path.mkdir()
    return path


def test_download_extracts_subset_and_second_call_is_noop(
    tmp_path: Path, root: Path, source_subset: Path, serve: Callable[..., _Server]
) -> None:
    tarball = _make_tarball(tmp_path / "www", source_subset)
    server = serve(tmp_path / "www")
    checksums = {SUBSET: _sha256(tarball)}

    got = ensure_subsets(
        root, [SUBSET], download=True, base_url=server.base_url + "/", checksums=checksums
    )

    assert got == [SUBSET]
    assert server.requests == 1
    assert subset_present(root, SUBSET)
    assert _relative_files(root / SUBSET) == _relative_files(source_subset)
    # Nothing but the subset and the corpus README: no temp archive or extraction folder.
    assert sorted(p.name for p in root.iterdir()) == ["README.TXT", SUBSET]

    again = ensure_subsets(
        root, [SUBSET], download=True, base_url=server.base_url, checksums=checksums
    )
    assert again == []
    assert server.requests == 1  # present subsets are never re-fetched


def test_md5_checksum_is_accepted(
    tmp_path: Path, root: Path, source_subset: Path, serve: Callable[..., _Server]
) -> None:
    tarball = _make_tarball(tmp_path / "www", source_subset)
    server = serve(tmp_path / "www")
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()

    got = ensure_subsets(
        root, [SUBSET], download=True, base_url=server.base_url, checksums={SUBSET: md5}
    )

    assert got == [SUBSET]
    assert subset_present(root, SUBSET)


def test_wrong_checksum_raises_and_leaves_root_empty(
    tmp_path: Path, root: Path, source_subset: Path, serve: Callable[..., _Server]
) -> None:
    _make_tarball(tmp_path / "www", source_subset)
    server = serve(tmp_path / "www")

    with pytest.raises(DownloadError, match="checksum") as err:
        ensure_subsets(
            root, [SUBSET], download=True, base_url=server.base_url, checksums={SUBSET: "0" * 64}
        )

    assert SUBSET in str(err.value)
    assert "0" * 64 in str(err.value)
    assert list(root.iterdir()) == []


def test_broken_connection_raises_and_leaves_root_empty(
    tmp_path: Path, root: Path, serve: Callable[..., _Server]
) -> None:
    server = serve(tmp_path, truncate=True)

    with pytest.raises(DownloadError, match="interrupted"):
        ensure_subsets(
            root,
            [SUBSET],
            download=True,
            base_url=server.base_url,
            checksums={SUBSET: "0" * 64},
            timeout_s=5,
        )

    assert server.requests == 1
    assert list(root.iterdir()) == []


def test_server_not_listening_raises_and_leaves_root_empty(root: Path) -> None:
    port = free_port()  # nothing listens there

    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}"):
        ensure_subsets(
            root, [SUBSET], download=True, base_url=f"http://127.0.0.1:{port}", timeout_s=5
        )

    assert list(root.iterdir()) == []


def test_missing_subset_without_download_explains_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as err:
        ensure_subsets(
            tmp_path / "nowhere", [SUBSET], download=False, base_url="http://127.0.0.1:9"
        )

    message = str(err.value)
    assert "LIBRISPEECH_DIR" in message
    assert "librispeech.root=" in message
    assert "librispeech.download: true" in message
    assert str((tmp_path / "nowhere").resolve() / SUBSET) in message
    assert not (tmp_path / "nowhere").exists()  # looking must not create anything


def test_present_subset_needs_no_network(root: Path, source_subset: Path) -> None:
    (root / SUBSET).symlink_to(source_subset, target_is_directory=True)

    assert ensure_subsets(root, [SUBSET], download=False, base_url="http://127.0.0.1:9") == []


@pytest.mark.parametrize("name", ["no-such-subset", "../dev-clean-2"])
def test_unknown_subset_raises(root: Path, name: str) -> None:
    with pytest.raises(DownloadError, match="subset"):
        ensure_subsets(root, [name], download=True, base_url="http://127.0.0.1:9")

    assert list(root.iterdir()) == []


def test_table_covers_openslr_subsets() -> None:
    assert {s for s, (r, _) in OPENSLR_SUBSETS.items() if r == 31} == {
        "train-clean-5",
        "dev-clean-2",
    }
    assert all(len(d) in (32, 64) for _, d in OPENSLR_SUBSETS.values())


def _add_traversal_member(tar: tarfile.TarFile) -> None:
    payload = b"escaped\n"
    info = tarfile.TarInfo("../escaped.txt")
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param((f"LibriSpeech/{SUBSET}", _add_traversal_member), id="path-traversal"),
        pytest.param((SUBSET, None), id="no-LibriSpeech-folder"),
        pytest.param(("LibriSpeech/dev-clean", None), id="other-subset"),
    ],
)
def test_bad_archive_raises_and_leaves_root_empty(
    tmp_path: Path,
    root: Path,
    source_subset: Path,
    serve: Callable[..., _Server],
    layout: tuple[str, Callable[[tarfile.TarFile], None] | None],
) -> None:
    arcname, extra = layout
    tarball = _make_tarball(tmp_path / "www", source_subset, arcname=arcname, extra=extra)
    server = serve(tmp_path / "www")

    with pytest.raises(DownloadError, match=SUBSET):
        ensure_subsets(
            root,
            [SUBSET],
            download=True,
            base_url=server.base_url,
            checksums={SUBSET: _sha256(tarball)},
        )

    assert list(root.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()
