"""Fetch a file once over HTTP(S): resumable (HTTP Range), checksummed (SHA-256), with a progress bar.

The bytes go to ``DEST.part`` until the whole file is there and its SHA-256 is right; only then is
it renamed to ``DEST`` (with ``DEST.sha256`` beside it), so ``DEST`` is always a verified file. An
interrupted download keeps ``DEST.part`` and the next call asks the server for the rest only.

>>> download("https://example.org/m.pth", Path("m.pth"), sha256="ab12...")   # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from gliofit.common.errors import InputError
from gliofit.common.io import file_sha256, remembered_sha256

__all__ = ["download", "verified", "CHUNK_BYTES"]

CHUNK_BYTES = 1 << 20
"""Bytes read and written per step (1 MiB)."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    s = sha256.strip().lower()
    if not _SHA256.match(s):
        raise InputError(f"SHA-256 must be 64 hex digits, got {sha256!r}")
    return s


def verified(path: Path, sha256: str | None) -> bool:
    """True when ``path`` is a file whose SHA-256 is ``sha256`` (any content when None).

    The digest is remembered in the user cache (:func:`gliofit.common.io.remembered_sha256`: trusted while
    the file's inode, size and timestamps are unchanged); a file placed by hand is hashed once. A mismatch
    raises :class:`InputError`.
    """
    if not path.is_file():
        return False
    want = _check_sha(sha256)
    got = remembered_sha256(path)
    if want is not None and got != want:
        raise InputError(
            f"{path}: SHA-256 {got} does not match the expected {want}; delete the file and fetch it again"
        )
    return True


def _open(url: str, offset: int, timeout_s: float):
    headers = {"User-Agent": "gliofit", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)


def _total_bytes(resp, offset: int) -> int | None:
    """Size of the whole file from Content-Range (206) or Content-Length (200); None when unknown."""
    rng = resp.headers.get("Content-Range", "")
    if resp.status == 206 and "/" in rng and rng.rsplit("/", 1)[1].strip().isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return int(length) + (offset if resp.status == 206 else 0) if length and length.isdigit() else None


def _receive(url: str, part: Path, name: str, timeout_s: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (from its current size); raises InputError when cut off."""
    from gliofit.common.progress import progress_bar

    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the part is already whole
            return
        raise InputError(f"{url}: the server answered HTTP {e.code} {e.reason}") from None
    with resp:
        if "text/html" in resp.headers.get("Content-Type", ""):
            raise InputError(f"{url}: the server sent a web page, not the file (a login or confirmation page?)")
        if resp.status != 206:  # the server ignored the range: start over
            offset = 0
        total = _total_bytes(resp, offset)
        done = offset
        with open(part, "ab" if offset else "wb") as f, progress_bar(disable=not progress) as bar:
            task = bar.add_task(
                f"downloading {name} (MB)",
                total=None if total is None else round(total / 1e6, 1),
                completed=round(done / 1e6, 1),
            )
            try:
                for chunk in iter(lambda: resp.read(CHUNK_BYTES), b""):
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(task, completed=round(done / 1e6, 1))
            except (OSError, http.client.HTTPException) as e:
                raise InputError(
                    f"{url}: download cut off after {done / 1e6:.1f} MB ({type(e).__name__}); run the "
                    "same command again to resume"
                ) from None
    if total is not None and done < total:
        raise InputError(
            f"{url}: download cut off after {done / 1e6:.1f} of {total / 1e6:.1f} MB; run the same "
            "command again to resume"
        )


def download(
    url: str, dest: str | Path, *, sha256: str | None = None, progress: bool = True, timeout_s: float = 30.0
) -> Path:
    """Download ``url`` to ``dest`` unless a verified copy is there; return ``dest``.

    Parameters
    ----------
    url : http(s) address of the file.
    dest : final path; its folder is created. ``dest.part`` holds an unfinished download.
    sha256 : expected hex digest; None accepts any content (the digest is still recorded).
    progress : show a progress bar (MB) on stderr.
    timeout_s : seconds without an answer before the connection counts as lost.

    Raises
    ------
    InputError : unreachable server, a web page instead of the file, a cut-off transfer (the part is
        kept for the next call), or a checksum mismatch (the part is deleted).
    """
    dest = Path(dest)
    want = _check_sha(sha256)
    if verified(dest, want):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _receive(url, part, dest.name, timeout_s, progress)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise InputError(
            f"{url}: cannot download ({reason}); without a network, fetch it elsewhere and put it at {dest}"
        ) from None
    got = file_sha256(part)
    if want is not None and got != want:
        part.unlink()
        raise InputError(f"{url}: SHA-256 {got} does not match the expected {want}; the download was discarded")
    os.replace(part, dest)
    verified(dest, got)
    return dest
