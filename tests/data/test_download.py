"""download(): a local HTTP server serves small files; failures must leave nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from gradprobe.data import download, load_mnist
from gradprobe.errors import GradprobeError

# `gradprobe.data.download` is the re-exported function, so fetch the module itself.
dl = importlib.import_module("gradprobe.data.download")

NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@dataclass
class Server:
    """A served directory plus per-file misbehaviour and a request counter."""

    url: str
    root: Path
    md5s: dict[str, str]
    mode: dict[str, str] = field(default_factory=dict)  # name -> "404" | "drop" | "slow"
    requests: Counter[str] = field(default_factory=Counter)
    release: threading.Event = field(default_factory=threading.Event)


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            server.requests[name] += 1
            mode = server.mode.get(name, "ok")
            path = server.root / name
            if mode == "404" or not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            if mode == "slow":
                server.release.wait(5)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            # "drop": promise more than we send, then hang up mid-file
            self.send_header("Content-Length", str(len(body) + (1000 if mode == "drop" else 0)))
            self.end_headers()
            try:
                self.wfile.write(body[: len(body) // 2] if mode == "drop" else body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (interrupt, timeout): expected in these tests
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output clean."""

    return Handler


@pytest.fixture
def server(tmp_path: Path, fake_mnist: Callable) -> Iterator[Server]:
    """Serve four small, valid MNIST-format files from a temporary directory."""
    root = tmp_path / "served"
    files = fake_mnist(root, n_train=300, n_test=40)  # ~250 kB: several read chunks
    md5s = {name: hashlib.md5(files[name].read_bytes()).hexdigest() for name in NAMES}
    state = Server(url="", root=root, md5s=md5s)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    httpd.block_on_close = False
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/mirror"  # no trailing slash
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_fetches_verifies_and_loads(
    tmp_path: Path, server: Server, capfd: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    target = download("mnist", cache, base_url=server.url, md5s=server.md5s)
    assert target == cache / "mnist"
    assert _leftovers(target) == sorted(NAMES)  # no .part files
    for name in NAMES:
        assert (target / name).read_bytes() == (server.root / name).read_bytes()
        assert (target / name).stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    x_tr, y_tr, x_te, _ = load_mnist("mnist", cache, verify_md5=False)
    assert x_tr.shape == (300, 28, 28) and x_te.shape == (40, 28, 28) and y_tr.shape == (300,)
    assert capfd.readouterr().err == ""  # no progress bar when stderr is not a TTY


def test_second_call_skips_present_files(tmp_path: Path, server: Server) -> None:
    download("mnist", tmp_path, base_url=server.url, md5s=server.md5s)
    assert server.requests == Counter({name: 1 for name in NAMES})
    download("mnist", tmp_path, base_url=server.url + "/", md5s=server.md5s)
    assert server.requests == Counter({name: 1 for name in NAMES})


def test_corrupt_present_file_is_replaced(tmp_path: Path, server: Server) -> None:
    download("mnist", tmp_path, base_url=server.url, md5s=server.md5s)
    bad = tmp_path / "mnist" / NAMES[2]
    bad.write_bytes(b"corrupt")
    download("mnist", tmp_path, base_url=server.url, md5s=server.md5s)
    assert server.requests[NAMES[2]] == 2 and server.requests[NAMES[0]] == 1
    assert bad.read_bytes() == (server.root / NAMES[2]).read_bytes()


@pytest.mark.parametrize("mode", ["404", "drop"])
def test_server_failure_leaves_nothing(tmp_path: Path, server: Server, mode: str) -> None:
    server.mode[NAMES[0]] = mode
    with pytest.raises(GradprobeError) as info:
        download("mnist", tmp_path, base_url=server.url, md5s=server.md5s)
    msg = str(info.value)
    assert NAMES[0] in msg and server.url in msg and "\n" not in msg
    assert ("404" in msg) if mode == "404" else ("closed early" in msg)
    assert _leftovers(tmp_path / "mnist") == []


def test_md5_mismatch_leaves_nothing(tmp_path: Path, server: Server) -> None:
    md5s = dict(server.md5s)
    md5s[NAMES[1]] = "0" * 32
    with pytest.raises(GradprobeError) as info:
        download("mnist", tmp_path, base_url=server.url, md5s=md5s)
    msg = str(info.value)
    assert NAMES[1] in msg and "0" * 32 in msg and server.md5s[NAMES[1]] in msg
    # the file before it was complete and verified, so it stays; the bad one is gone
    assert _leftovers(tmp_path / "mnist") == [NAMES[0]]


def test_keyboard_interrupt_mid_file_leaves_nothing(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def interrupt_after_first_chunk(n: int) -> None:
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    class FakeProgress:
        def __init__(self, name: str, total: int | None) -> None:
            pass

        def __enter__(self) -> Callable[[int], None]:
            return interrupt_after_first_chunk

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(dl, "_CHUNK", 4096)
    monkeypatch.setattr(dl, "_progress", FakeProgress)
    with pytest.raises(KeyboardInterrupt):
        download("mnist", tmp_path, base_url=server.url, md5s=server.md5s)
    assert len(seen) == 2
    assert _leftovers(tmp_path / "mnist") == []


def test_timeout_is_reported(tmp_path: Path, server: Server) -> None:
    server.mode[NAMES[0]] = "slow"
    with pytest.raises(GradprobeError, match="timed out"):
        download("mnist", tmp_path, base_url=server.url, md5s=server.md5s, timeout=0.3)
    server.release.set()
    assert _leftovers(tmp_path / "mnist") == []


def test_unreachable_mirror(tmp_path: Path) -> None:
    # Port 9 (discard) on localhost is closed here; the error names file, URL and remedy.
    with pytest.raises(GradprobeError, match="train-images-idx3-ubyte.gz: download from .*9/"):
        download("mnist", tmp_path, base_url="http://127.0.0.1:9/", timeout=2)
    assert _leftovers(tmp_path / "mnist") == []


def test_unwritable_cache_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(GradprobeError, match=r"data\.data_dir: cannot create .*file/mnist"):
        download("mnist", blocker)


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(GradprobeError, match="kind: 'emnist'"):
        download("emnist", tmp_path)  # type: ignore[arg-type]


def test_default_mirrors() -> None:
    assert dl.DEFAULT_MIRRORS["mnist"] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert dl.DEFAULT_MIRRORS["fashion-mnist"].startswith("http://fashion-mnist.s3-website")


def test_progress_bar_on_a_tty(
    tmp_path: Path,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    target = download("fashion-mnist", tmp_path, base_url=server.url, md5s=server.md5s)
    assert "t10k-labels-idx1-ubyte.gz" in capsys.readouterr().err  # rich drew a bar
    assert _leftovers(target) == sorted(NAMES)
    labels = np.frombuffer(gzip.decompress((target / NAMES[1]).read_bytes())[8:], np.uint8)
    assert labels.size == 300
