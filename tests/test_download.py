"""ambient.fetch (the download primitives) and ambient.pipeline.download (the paper datasets) against a
local HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from ambient import data, fetch
from ambient.pipeline import download as dl

# ---------------------------------------------------------------- fake server


class FakeServer:
    """Serves `files` (path -> bytes); honours `Range: bytes=N-` unless `ranges` is False.

    `truncate[path] = k` sends only half the body (but the full Content-Length) for the next k
    requests of `path` (-1: always). `/uc?id=ID...` mimics Google Drive: without the right
    confirm token it answers an HTML warning page (mode `gdrive_mode`: form, link, cookie,
    quota), with it the file `gdrive[ID]`.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.ranges = True
        self.etags = True
        self.gdrive: dict[str, bytes] = {}
        self.gdrive_mode = "form"
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.url = ""

    def __call__(self, path: str) -> str:
        return self.url + path

    def paths(self, path: str) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if urlsplit(r[0]).path == path]


def _handler(state: FakeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one response per connection: a short body ends in EOF

        def log_message(self, *args):
            pass

        def _send(self, code, body=b"", headers=(), ctype="application/octet-stream", short=False):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if short else body)

        def do_GET(self):
            with state.lock:
                state.requests.append((self.path, self.headers.get("Range")))
            parts = urlsplit(self.path)
            if parts.path == "/uc":
                return self._gdrive(parse_qs(parts.query))
            body = state.files.get(parts.path)
            if body is None:
                return self._send(404, b"not found", ctype="text/plain")
            self._serve(parts.path, body)

        def _serve(self, path, body):
            code, headers = 200, [("Accept-Ranges", "bytes")] if state.ranges else []
            etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
            if state.etags:
                headers.append(("ETag", etag))
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if if_range is not None and (not state.etags or if_range != etag):
                rng = None  # RFC 9110: the file changed, so the whole file comes back with 200
            if rng and state.ranges:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
                if start >= len(body):
                    return self._send(416, b"", [("Content-Range", f"bytes */{len(body)}")])
                code = 206
                headers.append(("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}"))
                body = body[start:]
            with state.lock:
                left = state.truncate.get(path, 0)
                if left > 0:
                    state.truncate[path] = left - 1
            self._send(code, body, headers, short=left != 0)

        def _gdrive(self, q):
            fid = q.get("id", [""])[0]
            if fid not in state.gdrive:
                return self._send(404, b"no such file", ctype="text/plain")
            cookie = self.headers.get("Cookie") or ""
            token = "T0K3N"
            ok = q.get("confirm", [""])[0] == token
            if state.gdrive_mode == "cookie":  # the cookie must also come back
                ok = ok and f"download_warning_{fid}={token}" in cookie
            if ok:
                return self._serve("/uc", state.gdrive[fid])
            if state.gdrive_mode == "form":
                page = (
                    f"<html><body><p>Google Drive can't scan this file for viruses.</p>"
                    f'<form id="download-form" action="{state.url}/uc" method="get">'
                    f'<input type="submit" value="Download anyway"/>'
                    f'<input type="hidden" name="id" value="{fid}">'
                    f'<input type="hidden" name="export" value="download">'
                    f'<input type="hidden" name="confirm" value="{token}">'
                    f'<input type="hidden" name="uuid" value="abc-123"></form></body></html>'
                )
                headers = []
            elif state.gdrive_mode == "link":
                page = (
                    f'<html><a id="uc-download-link" href="/uc?export=download&amp;confirm={token}'
                    f'&amp;id={fid}">Download anyway</a></html>'
                )
                headers = []
            elif state.gdrive_mode == "cookie":
                page = "<html><body>Virus scan warning</body></html>"
                headers = [("Set-Cookie", f"download_warning_{fid}={token}; Path=/")]
            else:  # quota
                page = (
                    "<html><title>Google Drive - Quota exceeded</title>Too many users have viewed "
                    "or downloaded this file recently.</html>"
                )
                headers = []
            self._send(200, page.encode(), headers, ctype="text/html; charset=utf-8")

    return Handler


@pytest.fixture
def server():
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch):
    for k in list(os.environ):
        if k.startswith("AMBIENT_") and k.endswith(("_URL", "_MD5", "_SHA256")):
            monkeypatch.delenv(k)


def _blob(n=300_000, seed=0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


FAST = dict(progress=False, backoff=0, timeout=10)


# ---------------------------------------------------------------- download


def test_download_verifies_and_is_not_repeated(server, tmp_path):
    body = _blob()
    server.files["/a.bin"] = body
    dest = tmp_path / "sub" / "a.bin"
    out = fetch.download(server("/a.bin"), dest, sha256=_sha(body), md5=_md5(body), **FAST)
    assert out == dest and dest.read_bytes() == body
    assert not fetch.part_path(dest).exists()
    assert [p for p in dest.parent.iterdir()] == [dest]
    n = len(server.requests)
    fetch.download(server("/a.bin"), dest, sha256=_sha(body), **FAST)
    assert len(server.requests) == n  # verified, not fetched again
    with pytest.raises(ValueError, match="delete it"):
        fetch.download(server("/a.bin"), dest, sha256="0" * 64, **FAST)
    assert dest.read_bytes() == body  # an existing file is never clobbered


def test_resume_partial_with_range(server, tmp_path):
    body = _blob()
    server.files["/a.bin"] = body
    dest = tmp_path / "a.bin"
    fetch.part_path(dest).write_bytes(body[:123_457])
    fetch.download(server("/a.bin"), dest, sha256=_sha(body), **FAST)
    assert dest.read_bytes() == body
    assert server.requests == [("/a.bin", "bytes=123457-")]


def test_resume_of_already_complete_part(server, tmp_path):
    body = _blob(5000)
    server.files["/a.bin"] = body
    dest = tmp_path / "a.bin"
    fetch.part_path(dest).write_bytes(body)
    fetch.download(server("/a.bin"), dest, md5=_md5(body), **FAST)  # 416 with bytes */5000
    assert dest.read_bytes() == body


def test_server_without_range_restarts(server, tmp_path):
    body = _blob()
    server.files["/a.bin"] = body
    server.ranges = False
    dest = tmp_path / "a.bin"
    fetch.part_path(dest).write_bytes(b"garbage" * 100)
    fetch.download(server("/a.bin"), dest, sha256=_sha(body), **FAST)
    assert dest.read_bytes() == body


def test_truncated_once_then_retry_resumes(server, tmp_path, capsys):
    body = _blob()
    server.files["/a.bin"] = body
    server.truncate["/a.bin"] = 1
    dest = tmp_path / "a.bin"
    fetch.download(server("/a.bin"), dest, sha256=_sha(body), retries=2, **{**FAST, "progress": True})
    assert dest.read_bytes() == body
    assert server.requests == [("/a.bin", None), ("/a.bin", f"bytes={len(body) // 2}-")]
    assert "attempt 1 failed (truncated" in capsys.readouterr().err


def test_always_truncated_fails_clearly(server, tmp_path):
    body = _blob(50_000)
    server.files["/a.bin"] = body
    server.truncate["/a.bin"] = -1
    server.ranges = False  # so every try restarts and is cut short again
    dest = tmp_path / "a.bin"
    with pytest.raises(fetch.DownloadError, match=r"failed after 3 attempts: truncated"):
        fetch.download(server("/a.bin"), dest, sha256=_sha(body), retries=2, **FAST)
    assert not dest.exists()
    assert len(server.requests) == 3


def test_file_url(tmp_path):
    body = _blob(10_000)
    src = tmp_path / "src.bin"
    src.write_bytes(body)
    dest = tmp_path / "out" / "a.bin"
    fetch.download(src.as_uri(), dest, sha256=_sha(body), **FAST)
    assert dest.read_bytes() == body


def test_http_404_is_not_retried(server, tmp_path):
    dest = tmp_path / "missing.bin"
    with pytest.raises(fetch.DownloadError, match="HTTP 404"):
        fetch.download(server("/missing.bin"), dest, retries=3, **FAST)
    assert len(server.requests) == 1 and not dest.exists()


def test_connection_refused_is_retried_then_fails(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    dest = tmp_path / "a.bin"
    with pytest.raises(fetch.DownloadError, match="failed after 2 attempts"):
        fetch.download(f"http://127.0.0.1:{port}/a.bin", dest, retries=1, **FAST)
    assert not dest.exists()


def test_checksum_mismatch_deletes_download(server, tmp_path):
    body = _blob(10_000)
    server.files["/a.bin"] = body
    dest = tmp_path / "a.bin"
    wrong = "f" * 64
    with pytest.raises(ValueError) as exc:
        fetch.download(server("/a.bin"), dest, sha256=wrong, **FAST)
    msg = str(exc.value)
    assert "a.bin" in msg and wrong in msg and _sha(body) in msg
    assert not dest.exists() and not fetch.part_path(dest).exists()
    with pytest.raises(ValueError, match=_md5(body)):
        fetch.download(server("/a.bin"), dest, md5="0" * 32, **FAST)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["form", "link", "cookie"])
def test_gdrive_confirmation(server, tmp_path, mode):
    body = _blob(20_000)
    server.gdrive["FILEID"] = body
    server.gdrive_mode = mode
    dest = tmp_path / "big.zip"
    fetch.download(server("/uc?export=download&id=FILEID"), dest, md5=_md5(body), gdrive=True, **FAST)
    assert dest.read_bytes() == body
    assert len(server.requests) == 2  # warning page, then the file


def test_gdrive_resume_after_confirmation(server, tmp_path):
    body = _blob(20_000)
    server.gdrive["FILEID"] = body
    dest = tmp_path / "big.zip"
    fetch.part_path(dest).write_bytes(body[:7000])
    fetch.download(server("/uc?export=download&id=FILEID"), dest, md5=_md5(body), gdrive=True, **FAST)
    assert dest.read_bytes() == body
    assert server.requests[-1][1] == "bytes=7000-"


def test_gdrive_quota_exceeded(server, tmp_path):
    server.gdrive["FILEID"] = b"x"
    server.gdrive_mode = "quota"
    dest = tmp_path / "big.zip"
    with pytest.raises(fetch.DownloadError, match="quota exceeded"):
        fetch.download(server("/uc?export=download&id=FILEID"), dest, gdrive=True, **FAST)
    assert not dest.exists() and not fetch.part_path(dest).exists()


def test_gdrive_confirm_url_unit():
    page = (
        b'<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        b'<input type="hidden" name="id" value="X"><input type="hidden" name="confirm" value="t"></form>'
    )
    assert (
        fetch.gdrive_confirm_url("https://drive.google.com/uc?id=X", page)
        == "https://drive.usercontent.google.com/download?id=X&confirm=t"
    )
    assert fetch.is_gdrive_url(dl.SOURCES["celeba"]["urls"][0])
    with pytest.raises(fetch.DownloadError, match="no download confirmation"):
        fetch.gdrive_confirm_url("https://drive.google.com/uc?id=X", b"<html>Sign in</html>")


# ---------------------------------------------------------------- safe_extract


def _zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return path


def _tar(path: Path, members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
    return path


def test_safe_extract_good_zip_and_tar(tmp_path):
    for arc in (
        _zip(tmp_path / "a.zip", {"top/x.txt": b"x", "top/d/y.txt": b"y"}),
        _tar(tmp_path / "a.tar.gz", {"top/x.txt": b"x", "top/d/y.txt": b"y"}),
    ):
        target = tmp_path / f"out_{arc.name}"
        assert dl.safe_extract(arc, target) == target
        assert (target / "top/x.txt").read_bytes() == b"x"
        assert (target / "top/d/y.txt").read_bytes() == b"y"
        with pytest.raises(FileExistsError):
            dl.safe_extract(arc, target)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


BAD = [
    ("zip", "../evil.txt", "'..'"),
    ("zip", "ok/../../evil.txt", "'..'"),
    ("zip", "/abs_evil.txt", "absolute"),
    ("zip_symlink", "top/link", "symlink"),
    ("tar", "../evil.txt", "'..'"),
    ("tar", "/abs_evil.txt", "absolute"),
    ("tar_symlink", "top/link", "link"),
    ("tar_hardlink", "top/hard", "link"),
    ("tar_device", "top/dev", "device"),
]


@pytest.mark.parametrize("kind,member,why", BAD)
def test_safe_extract_refuses(tmp_path, kind, member, why):
    work = tmp_path / "work"
    work.mkdir()
    good = {"top/ok.txt": b"ok"}
    if kind == "zip":
        arc = _zip(work / "bad.zip", {**good, member: b"evil"})
    elif kind == "zip_symlink":
        arc = _zip(work / "bad.zip", good, {member: "../../../outside.txt"})
    elif kind == "tar":
        arc = _tar(work / "bad.tgz", {**good, member: b"evil"})
    elif kind == "tar_symlink":
        arc = _tar(work / "bad.tgz", good, {member: (tarfile.SYMTYPE, "/etc/passwd")})
    elif kind == "tar_hardlink":
        arc = _tar(work / "bad.tgz", good, {member: (tarfile.LNKTYPE, "../../outside.txt")})
    else:
        arc = _tar(work / "bad.tgz", good, {member: (tarfile.CHRTYPE, "")})
    target = work / "out"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError) as exc:
        dl.safe_extract(arc, target)
    assert repr(member) in str(exc.value) and why in str(exc.value)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert not Path("/abs_evil.txt").exists()


# ---------------------------------------------------------------- prepare_paper_dataset


def _fake_celeba(n=12) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("img_align_celeba/", b"")
        for i in range(1, n + 1):
            arr = rng.integers(0, 256, (44, 36, 3), dtype=np.uint8)  # h x w, portrait like CelebA
            img = io.BytesIO()
            Image.fromarray(arr).save(img, format="JPEG", quality=90)
            zf.writestr(f"img_align_celeba/{i:06d}.jpg", img.getvalue())
    return buf.getvalue()


def _fake_ffhq(n=4) -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("thumbnails128x128/LICENSE.txt", b"license")
        for i in range(n):
            arr = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
            img = io.BytesIO()
            Image.fromarray(arr).save(img, format="PNG")
            zf.writestr(f"thumbnails128x128/{i // 1000 * 1000:05d}/{i:05d}.png", img.getvalue())
    return buf.getvalue()


def test_prepare_celeba_end_to_end(server, tmp_path, monkeypatch):
    archive = _fake_celeba()
    server.files["/img_align_celeba.zip"] = archive
    url = server("/img_align_celeba.zip")
    raw = tmp_path / "raw"

    # The registry's md5 applies to a mirror too: the fake archive fails it.
    with pytest.raises(ValueError, match="md5 mismatch"):
        dl.prepare_paper_dataset("celeba", raw, tmp_path / "x.zip", num_images=5, url=url, progress=False)
    assert not (raw / "img_align_celeba.zip").exists() and not (raw / "celeba").exists()

    monkeypatch.setenv("AMBIENT_CELEBA_URL", url)
    monkeypatch.setenv("AMBIENT_CELEBA_MD5", _md5(archive))
    m0 = dl.prepare_paper_dataset("celeba", raw, tmp_path / "s0.zip", num_images=5, seed=0, progress=False)
    n_requests = len(server.requests)
    m0b = dl.prepare_paper_dataset("celeba", raw, tmp_path / "s0b.zip", num_images=5, seed=0, progress=False)
    m1 = dl.prepare_paper_dataset("celeba", raw, tmp_path / "s1.zip", num_images=5, seed=1, progress=False)
    assert len(server.requests) == n_requests  # downloaded and extracted once

    files = [f"img_align_celeba/{i:06d}.jpg" for i in range(1, 13)]
    expect0 = np.sort(np.random.default_rng(0).choice(12, 5, replace=False))
    assert m0["subset_indices"] == expect0.tolist()
    assert m0["subset_files"] == [files[i] for i in expect0]
    assert m0["subset_files"] == m0b["subset_files"]
    assert m1["subset_files"] != m0["subset_files"]
    assert (tmp_path / "s0.zip").read_bytes() == (tmp_path / "s0b.zip").read_bytes()

    assert m0["source"] == "celeba" and m0["seed"] == 0 and m1["seed"] == 1
    assert m0["url"] == url and m0["archive_sha256"] == _sha(archive) and m0["archive_md5"] == _md5(archive)
    assert m0["num_available"] == 12 and "LANCZOS" in m0["recipe"] and "center crop" in m0["recipe"]
    assert [e["source"] for e in m0["images"]] == [f"celeba:{f}" for f in m0["subset_files"]]

    ds = data.read_image_zip(tmp_path / "s0.zip")
    assert ds.images.shape == (5, 3, 64, 64) and ds.images.dtype == np.uint8
    assert ds.manifest["subset_files"] == m0["subset_files"]
    first = data.load_image_file(raw / "celeba" / m0["subset_files"][0], 64, 3)
    assert np.array_equal(ds.images[0], first)
    assert sorted(p.name for p in raw.iterdir()) == [".celeba.lock", "celeba", "img_align_celeba.zip"]
    record = json.loads((raw / "celeba" / dl.SOURCE_RECORD).read_text())
    assert record["md5"] == _md5(archive)

    # the archive may be deleted after extraction; the manifest still records its checksum
    (raw / "img_align_celeba.zip").unlink()
    m2 = dl.prepare_paper_dataset("celeba", raw, tmp_path / "s2.zip", num_images=3, seed=0, progress=False)
    assert m2["archive_sha256"] == _sha(archive)
    with pytest.raises(ValueError, match="num_images=13"):
        dl.prepare_paper_dataset("celeba", raw, tmp_path / "s3.zip", num_images=13, progress=False)


def test_prepare_ffhq_thumbnails(server, tmp_path):
    archive = _fake_ffhq()
    server.files["/thumbnails128x128.zip"] = archive
    raw = tmp_path / "raw"
    with pytest.raises(ValueError, match="AMBIENT_FFHQ_URL"):  # no default url is known
        dl.prepare_paper_dataset("ffhq", raw, tmp_path / "f.zip", progress=False)
    m = dl.prepare_paper_dataset(
        "ffhq",
        raw,
        tmp_path / "f.zip",
        num_images=3,
        seed=0,
        url=server("/thumbnails128x128.zip"),
        sha256=_sha(archive),
        progress=False,
    )
    assert m["layout"] == "thumbnails128x128/*/*.png" and m["num_available"] == 4
    ds = data.read_image_zip(tmp_path / "f.zip")
    assert ds.images.shape == (3, 3, 64, 64)
    src = Image.open(raw / "ffhq" / m["subset_files"][0]).convert("RGB")
    want = np.asarray(src.resize((64, 64), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    assert np.array_equal(ds.images[0], want)


def test_sources_registry_shape():
    for name, src in dl.SOURCES.items():
        for key in ("urls", "filename", "md5", "sha256", "images", "license", "recipe"):
            assert key in src, (name, key)
    assert dl.SOURCES["celeba"]["md5"] == "00d2c5bc6d35e252742224ab0c1e8fcb"
    assert "0B7EVK8r0v71pZjFTYXZWM3FlRnM" in dl.SOURCES["celeba"]["urls"][0]
    with pytest.raises(ValueError, match="unknown dataset source"):
        dl.source("imagenet")


# ---------------------------------------------------------------- a .part is resumed only when vouched for


def test_a_stale_part_without_validator_or_checksum_is_restarted(server, tmp_path, capsys):
    body = _blob()
    server.files["/a.bin"] = body
    dest = tmp_path / "a.bin"
    fetch.part_path(dest).write_bytes(b"foreign bytes" * 100)  # no .part.json: nothing vouches for it
    fetch.download(server("/a.bin"), dest, **FAST)
    assert dest.read_bytes() == body
    assert server.requests == [("/a.bin", None)]
    assert "no validator and no checksum" in capsys.readouterr().err
    assert not fetch.part_meta_path(fetch.part_path(dest)).exists()


def test_a_part_resumes_with_if_range_and_restarts_when_the_file_changed(server, tmp_path):
    old, new = _blob(30_000), _blob(30_000)[::-1]
    server.files["/a.bin"] = old
    server.truncate["/a.bin"] = -1
    dest = tmp_path / "a.bin"
    with pytest.raises(fetch.DownloadError):  # leaves half of `old` in the .part, with its ETag beside it
        fetch.download(server("/a.bin"), dest, retries=0, **FAST)
    part = fetch.part_path(dest)
    assert part.stat().st_size == 15_000 and fetch.part_meta_path(part).exists()
    server.truncate["/a.bin"] = 0
    fetch.download(server("/a.bin"), dest, **FAST)  # same file: resumed, no checksum needed
    assert dest.read_bytes() == old and server.requests[-1][1] == "bytes=15000-"

    dest.unlink()
    server.truncate["/a.bin"] = -1
    with pytest.raises(fetch.DownloadError):
        fetch.download(server("/a.bin"), dest, retries=0, **FAST)
    server.files["/a.bin"], server.truncate["/a.bin"] = new, 0  # the file changes on the server
    fetch.download(server("/a.bin"), dest, **FAST)
    assert dest.read_bytes() == new  # If-Range did not match: the whole new file, not old + new's tail
