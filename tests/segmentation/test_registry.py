"""`gliofit models` and checkpoint downloads, against a loopback HTTP server this test starts.

The server serves a small checkpoint we make, honours HTTP Range requests (or ignores them), and can
cut a transfer short or send tampered bytes: the download resumes from where it stopped, refuses a
wrong SHA-256 in one line, and never leaves an unverified file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.common.download import download
from gliofit.common.errors import InputError
from gliofit.segmentation.checkpoints import read_checkpoint
from gliofit.segmentation.registry import model_path, registry, resolve_model

runner = CliRunner()


class _Server:
    """Files by URL path; ``mode[path]``: "cut" (stop half-way once), "norange" (always 200), "tamper"."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.mode: dict[str, str] = {}
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def do_GET(self) -> None:
                server.ranges.append(self.headers.get("Range"))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                mode = server.mode.get(self.path, "")
                if mode == "tamper":
                    data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
                start = 0
                rng = self.headers.get("Range")
                if rng and mode != "norange":
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if mode == "cut":
                    server.mode[self.path] = ""  # the next request gets the rest
                    body = body[: len(body) // 2]
                self.wfile.write(body)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture()
def server():
    s = _Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture()
def checkpoint_bytes(tmp_path) -> bytes:
    """A small nnU-Net v2 style checkpoint (``{'network_weights': ...}``), ~1.5 MB."""
    g = torch.Generator().manual_seed(0)
    weights = {
        "conv_blocks_context.0.0.conv1.weight": torch.randn(32, 1, 3, 3, 3, generator=g),
        "seg_outputs.0.weight": torch.randn(105, 32, 1, 1, 1, generator=g),
        "decoder.big": torch.randn(360, 1000, generator=g),
    }
    p = tmp_path / "made.pth"
    torch.save({"network_weights": weights}, p)
    return p.read_bytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_resumes_after_a_cut_off_transfer(server, checkpoint_bytes, tmp_path):
    server.files["/m.pth"] = checkpoint_bytes
    server.mode["/m.pth"] = "cut"
    dest = tmp_path / "cache" / "m.pth"
    with pytest.raises(InputError, match="cut off .* run the same command again to resume"):
        download(server.url + "/m.pth", dest, sha256=_sha(checkpoint_bytes), progress=False)
    part = dest.with_name("m.pth.part")
    assert not dest.exists() and 0 < part.stat().st_size < len(checkpoint_bytes)
    kept = part.stat().st_size
    download(server.url + "/m.pth", dest, sha256=_sha(checkpoint_bytes), progress=False)
    assert server.ranges[-1] == f"bytes={kept}-"  # asked for the rest only
    assert dest.read_bytes() == checkpoint_bytes and not part.exists()
    weights, _ = read_checkpoint(dest)
    assert weights["seg_outputs.0.weight"].shape == (105, 32, 1, 1, 1)
    n = len(server.ranges)
    download(server.url + "/m.pth", dest, sha256=_sha(checkpoint_bytes), progress=False)
    assert len(server.ranges) == n  # once: a verified file is not fetched again


def test_a_server_ignoring_range_restarts_from_zero(server, checkpoint_bytes, tmp_path):
    server.files["/m.pth"] = checkpoint_bytes
    dest = tmp_path / "m.pth"
    dest.with_name("m.pth.part").write_bytes(b"garbage that is not the start of the file")
    server.mode["/m.pth"] = "norange"
    download(server.url + "/m.pth", dest, sha256=_sha(checkpoint_bytes), progress=False)
    assert dest.read_bytes() == checkpoint_bytes


def test_tampered_download_is_refused_in_one_line_and_discarded(server, checkpoint_bytes, tmp_path):
    server.files["/m.pth"] = checkpoint_bytes
    server.mode["/m.pth"] = "tamper"
    dest = tmp_path / "m.pth"
    with pytest.raises(InputError) as e:
        download(server.url + "/m.pth", dest, sha256=_sha(checkpoint_bytes), progress=False)
    assert "does not match the expected" in str(e.value) and "\n" not in str(e.value)
    assert not dest.exists() and not dest.with_name("m.pth.part").exists()


def test_a_tampered_file_in_the_cache_is_refused(server, checkpoint_bytes, tmp_path):
    dest = tmp_path / "m.pth"
    dest.write_bytes(checkpoint_bytes[:-1] + b"x")
    with pytest.raises(InputError, match="does not match the expected"):
        download(server.url + "/m.pth", dest, sha256=_sha(checkpoint_bytes), progress=False)


def _registry(tmp_path: Path, url: str, sha: str | None, kind: str = "segmentation") -> Path:
    reg = tmp_path / "models.json"
    reg.write_text(
        json.dumps(
            {
                "format_version": 1,
                "models": {
                    "tiny": {
                        "variant": "small",
                        "kind": kind,
                        "source": "made by the test",
                        "url": url,
                        "file": "tiny.pth",
                        "sha256": sha,
                        "licence": "CC0-1.0",
                        "expected_input": "4 MRI channels",
                    }
                },
            }
        )
    )
    return reg


def test_models_lists_the_packaged_registry_and_fetch_downloads_once(server, checkpoint_bytes, tmp_path, monkeypatch):
    packaged = registry()
    assert {"stunet-small", "stunet-base", "stunet-large", "stunet-huge"} <= set(packaged)
    for e in packaged.values():
        assert e.url.startswith("https://") and e.licence and e.expected_input
        assert e.sha256 is None or len(e.sha256) == 64
    server.files["/tiny.pth"] = checkpoint_bytes
    monkeypatch.setenv("GLIOFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLIOFIT_MODELS", str(_registry(tmp_path, server.url + "/tiny.pth", _sha(checkpoint_bytes))))
    listed = runner.invoke(app, ["models", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["tiny"]["downloaded"] is False and rows["stunet-base"]["sha256"].startswith("unknown")
    res = runner.invoke(app, ["models", "fetch", "tiny", "--quiet"])
    assert res.exit_code == 0, res.output
    path = Path(res.stdout.strip())
    assert path == model_path(registry()["tiny"]) and path.read_bytes() == checkpoint_bytes
    n = len(server.ranges)
    assert resolve_model("tiny", progress=False) == path and len(server.ranges) == n


def test_model_by_url_with_checksum_and_refusals(server, checkpoint_bytes, tmp_path, monkeypatch):
    server.files["/x/own.pth"] = checkpoint_bytes
    monkeypatch.setenv("GLIOFIT_CACHE", str(tmp_path / "cache"))
    p = resolve_model(f"{server.url}/x/own.pth#sha256={_sha(checkpoint_bytes)}", progress=False)
    assert p.name == "own.pth" and p.read_bytes() == checkpoint_bytes
    with pytest.raises(InputError, match="does not match"):
        resolve_model(f"{server.url}/x/own.pth#sha256={'0' * 64}", progress=False)
    monkeypatch.setenv("GLIOFIT_MODELS", str(_registry(tmp_path, server.url + "/tiny.pth", None, "pretrained")))
    with pytest.raises(InputError, match="not a brain-tumour model; fine-tune it first"):
        resolve_model("tiny", progress=False)
    with pytest.raises(InputError, match="not a known model"):
        resolve_model("no-such-model", progress=False)


def test_offline_fetch_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIOFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GLIOFIT_MODELS", str(_registry(tmp_path, "http://127.0.0.1:9/tiny.pth", None)))
    res = runner.invoke(app, ["models", "fetch", "tiny", "--quiet"])
    assert res.exit_code == 2
    line = res.stderr.strip()
    assert "\n" not in line and str(tmp_path / "cache" / "models" / "tiny" / "tiny.pth") in line
    assert "put it at" in line
