"""Atomic, MD5-checked download of the MNIST / Fashion-MNIST files."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from gradprobe.data.idx import KIND_FILES, MnistKind, file_md5
from gradprobe.errors import GradprobeError

__all__ = ["DEFAULT_MIRRORS", "download"]

logger = logging.getLogger(__name__)

DEFAULT_MIRRORS: Mapping[str, str] = MappingProxyType(
    {
        "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    }
)
_CHUNK = 1 << 16
_USER_AGENT = "gradprobe (+https://pypi.org/project/gradprobe/)"

Advance = Callable[[int], None]


@contextlib.contextmanager
def _progress(name: str, total: int | None) -> Iterator[Advance]:
    """Yield a callback that advances a rich progress bar, or a no-op when stderr is no TTY.

    Args:
        name: file name shown beside the bar.
        total: expected bytes, or None if unknown.

    Returns:
        A context manager yielding ``advance(n_bytes)``.
    """
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(name, total=total)
        yield lambda n: bar.advance(task, n)


def _stream(url: str, out: BinaryIO, timeout: float, name: str) -> str:
    """Copy ``url`` into the open binary file ``out`` and return the MD5 of what was written.

    Args:
        url: source URL.
        out: writable binary file.
        timeout: socket timeout in seconds.
        name: file name for the progress bar and messages.

    Returns:
        MD5 hex digest of the body.

    Raises:
        http.client.IncompleteRead: the connection closed before Content-Length bytes arrived.
        OSError: network or disk error (``urllib.error.URLError`` included).
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    h = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with _progress(name, total) as advance:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
                received += len(chunk)
                advance(len(chunk))
    # http.client returns a short body instead of raising when the server hangs up early.
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)
    return h.hexdigest()


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Download ``url`` to ``dest`` via a temporary file; leave nothing behind on failure.

    Args:
        url: source URL.
        dest: final path; replaced atomically once the MD5 matches.
        md5: expected MD5 hex digest.
        timeout: socket timeout in seconds.

    Raises:
        GradprobeError: HTTP/network error, short body or MD5 mismatch.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.part-", dir=dest.parent)
    except OSError as exc:
        raise GradprobeError(
            f"data.data_dir: cannot write to {dest.parent} ({exc.strerror}); "
            f"pass a writable --data-dir"
        ) from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _stream(url, out, timeout, dest.name)
            if got != md5:
                raise GradprobeError(
                    f"{dest.name}: md5 mismatch for {url}: expected {md5}, got {got}; the mirror "
                    f"serves a different file: try again later or pass another base_url"
                )
            out.flush()
            os.fchmod(out.fileno(), 0o644)  # mkstemp makes 0600; a shared cache must be readable
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # it wraps the open response; closing frees the socket
        if isinstance(exc, GradprobeError):
            raise
        raise GradprobeError(
            f"{dest.name}: download from {url} failed ({_describe(exc)}); check the network, "
            f"pass another base_url, or put the file in {dest.parent} by hand"
        ) from exc
    except BaseException:  # KeyboardInterrupt, SystemExit: clean up, then propagate as is
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _describe(exc: BaseException) -> str:
    """One-line description of a download error.

    Args:
        exc: the exception.

    Returns:
        E.g. ``HTTP 404 Not Found`` or ``connection closed early, 12 bytes missing``.
    """
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed early, {exc.expected} bytes missing"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry so a completed rename survives a crash (best effort).

    Args:
        directory: the directory that received the file.
    """
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def download(
    kind: MnistKind,
    cache_dir: str | os.PathLike[str],
    base_url: str | None = None,
    timeout: float = 30,
    md5s: Mapping[str, str] | None = None,
) -> Path:
    """Download the four files of ``kind`` into ``<cache_dir>/<kind>/``, skipping good ones.

    Each file streams into ``.<name>.part-<random>`` beside its final name, is MD5-checked and
    fsynced, then atomically renamed; on any failure (including Ctrl-C) the partial file is
    removed, so the directory only ever holds complete, verified files.

    Args:
        kind: ``"mnist"`` or ``"fashion-mnist"``.
        cache_dir: root data directory (the same one ``load_mnist`` reads).
        base_url: mirror URL the file names are appended to; default ``DEFAULT_MIRRORS[kind]``.
        timeout: socket timeout in seconds.
        md5s: file name -> expected MD5; default the published table for ``kind``.

    Returns:
        The directory holding the files, ``<cache_dir>/<kind>``.

    Raises:
        GradprobeError: unknown kind, unwritable directory, network error or MD5 mismatch.
    """
    if kind not in KIND_FILES:
        raise GradprobeError(f"kind: {kind!r} is not allowed; allowed: {', '.join(KIND_FILES)}")
    table = KIND_FILES[kind] if md5s is None else md5s
    base = (base_url or DEFAULT_MIRRORS[kind]).rstrip("/") + "/"
    target = Path(cache_dir).expanduser() / kind
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradprobeError(
            f"data.data_dir: cannot create {target} ({exc.strerror}); pass a writable --data-dir"
        ) from exc
    for name, md5 in table.items():
        dest = target / name
        if dest.is_file():
            if file_md5(dest) == md5:
                logger.debug("%s: already present with the right md5, skipped", dest)
                continue
            logger.warning("%s: md5 differs from the published one, downloading it again", dest)
        logger.info("downloading %s%s -> %s", base, name, dest)
        _fetch(base + name, dest, md5, timeout)
    return target
