"""Downloading and preparing the paper-scale datasets (CelebA, FFHQ thumbnails, CelebA-HQ).

Pipeline for one source ``name`` (see `SOURCES`):

1. **Download** the official archive to ``raw_dir/<filename>`` with `download`: streamed to
   ``<filename>.part`` beside it, resumed with an HTTP ``Range`` request after an interruption,
   retried with exponential backoff, verified against the known checksum(s), and only then
   renamed onto the final name. A finished archive is never fetched twice.
2. **Extract** it with `safe_extract` into ``raw_dir/<name>/`` (via a temporary folder beside it
   and one atomic rename). Members with absolute paths, ``..`` components, links or device
   entries are refused before anything is written. The archive's url and checksums are recorded
   in ``raw_dir/<name>/.source.json``, so the archive itself may be deleted afterwards.
3. **Choose the subset** reproducibly: the image files matching the source's layout glob are
   sorted by their path relative to ``raw_dir/<name>`` (POSIX separators), then
   ``numpy.random.default_rng(seed).choice(len(files), num_images, replace=False)`` picks the
   indices, which are sorted again (so the output order is the sorted file order).
4. **Crop and resize** every chosen image (`ambient.data.load_image_file`): decode, convert to
   RGB, center crop to the largest square (offsets ``(w - side) // 2``, ``(h - side) // 2``,
   i.e. rounding toward the top-left), then resize to ``resolution`` x ``resolution`` with PIL's
   Lanczos filter (``Image.Resampling.LANCZOS``) and round to uint8.

   * CelebA (``img_align_celeba``, 178x218 JPEGs): center crop to 178x178 (rows 20..197),
     Lanczos resize to 64x64.
   * FFHQ thumbnails (``thumbnails128x128``, 128x128 PNGs): already square, so only the
     Lanczos resize 128 -> 64.
   * CelebA-HQ (1024x1024): already square, Lanczos resize 1024 -> ``resolution``.
5. **Write** the prepared zip with `ambient.data.write_image_zip`. Its manifest records the
   source name, url, archive checksums, seed, the subset (indices into the sorted file list and
   the file names) and this recipe, so the exact subset can be rebuilt and audited.

Only the standard library (urllib) is used for HTTP. Google Drive's "can't scan this file for
viruses" confirmation page for large files is handled by `gdrive_confirm_url`.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from html.parser import HTMLParser
from http.client import HTTPException
from http.cookiejar import CookieJar
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from .. import data
from ..entry import UserError
from ..utils import write_json

USER_AGENT = "Mozilla/5.0 (compatible; ambient-download/0.1; +python-urllib)"
CHUNK = 1 << 20
SOURCE_RECORD = ".source.json"
_MAX_HTML = 2 << 20  # at most this much of an HTML (confirmation) page is read
_GDRIVE_HOSTS = {"drive.google.com", "docs.google.com", "drive.usercontent.google.com"}

RECIPE = (
    "sorted image files (POSIX relative paths); subset = sorted(numpy.random.default_rng(seed)"
    ".choice(len(files), num_images, replace=False)); each image: decode with PIL, convert to RGB, "
    "center crop to the largest square (offset (w-side)//2, (h-side)//2), resize to "
    "resolution x resolution with PIL Image.Resampling.LANCZOS, uint8"
)


def _gdrive(file_id: str) -> list[str]:
    return [
        f"https://drive.google.com/uc?export=download&id={file_id}",
        f"https://drive.usercontent.google.com/download?id={file_id}&export=download",
    ]


# ---------------------------------------------------------------- dataset registry
#
# Checksums are those published by a maintainer we can name; a checksum left as None is not
# known to us (none was published for that file) and is then simply not checked. Whatever the
# download gives is recorded (sha256 and md5) in the prepared dataset's manifest either way.
SOURCES: dict[str, dict] = {
    "celeba": {
        "description": "CelebA, aligned & cropped JPEGs (178x218), 202,599 images",
        "homepage": "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        # The official Google Drive file (the id torchvision.datasets.CelebA uses).
        "gdrive_id": "0B7EVK8r0v71pZjFTYXZWM3FlRnM",
        "urls": _gdrive("0B7EVK8r0v71pZjFTYXZWM3FlRnM"),
        "filename": "img_align_celeba.zip",
        "md5": "00d2c5bc6d35e252742224ab0c1e8fcb",  # from torchvision's CelebA.file_list
        "sha256": None,  # not published anywhere we know of
        "size_note": "about 1.4 GB",
        "images": ["img_align_celeba/*.jpg"],  # img_align_celeba/000001.jpg ... 202599.jpg
        "num_images": 202599,
        "recipe": "center crop 178x218 -> 178x178, Lanczos resize to the resolution (64)",
        "license": "CelebA is available for non-commercial research purposes only, under the "
        "agreement on its homepage; the images are not owned by CUHK and must not be "
        "redistributed or used commercially.",
    },
    "ffhq": {
        "description": "FFHQ thumbnails, 128x128 PNGs, 70,000 images",
        "homepage": "https://github.com/NVlabs/ffhq-dataset",
        # The official distribution is a Google Drive *folder* (thumbnails128x128/00000/00000.png
        # ... 69000/69999.png, 1.95 GB) that cannot be fetched with one request; the `zips`
        # folder holds thumbnails128x128.zip, whose file id and checksum we do not know. So
        # there is no default url: download thumbnails128x128.zip (or run the official
        # download_ffhq.py --thumbs) yourself and either set AMBIENT_FFHQ_URL / pass url= to a
        # place that serves it (file:// works), put it at raw_dir/thumbnails128x128.zip, or put
        # the extracted thumbnails128x128/ folder under raw_dir/ffhq/.
        "pages": [
            "https://drive.google.com/open?id=1tg-Ur7d4vk1T8Bn0pPpUSQPxlPGBlGfv",  # thumbnails128x128/
            "https://drive.google.com/open?id=1WocxvZ4GEZ1DI8dOz30aSj2zT6pkATYS",  # zips/
        ],
        "urls": [],
        "filename": "thumbnails128x128.zip",
        # Unknown: NVIDIA publishes an md5 per PNG (in ffhq-dataset-v2.json), none for the zip.
        "md5": None,
        "sha256": None,
        "size_note": "about 1.95 GB",
        "images": ["thumbnails128x128/*/*.png", "*/*.png", "*.png"],
        "num_images": 70000,
        "recipe": "128x128 PNG, Lanczos resize 128 -> resolution (64); no crop (already square)",
        "license": "Dataset (metadata, layout) by NVIDIA under CC BY-NC-SA 4.0; each image under "
        "its Flickr license (CC BY 2.0, CC BY-NC 2.0, Public Domain Mark 1.0, CC0 1.0 "
        "or U.S. Government Works): non-commercial use, credit and indicate changes.",
    },
    "celeba_hq": {
        "description": "CelebA-HQ, 30,000 images at 1024x1024 (optional)",
        "homepage": "https://github.com/tkarras/progressive_growing_of_gans",
        # CelebA-HQ was released as a recipe (deltas applied to CelebA in-the-wild images), not as
        # an archive; third-party packagings exist (e.g. CelebAMask-HQ.zip with
        # CelebAMask-HQ/CelebA-HQ-img/0.jpg ... 29999.jpg), but we know no stable official url or
        # checksum: supply one with AMBIENT_CELEBA_HQ_URL or url=.
        "urls": [],
        "filename": "celeba_hq.zip",
        "md5": None,  # unknown
        "sha256": None,  # unknown
        "images": ["CelebAMask-HQ/CelebA-HQ-img/*.jpg", "**/*.jpg", "**/*.png"],
        "num_images": 30000,
        "recipe": "1024x1024, Lanczos resize to the resolution; no crop (already square)",
        "license": "Derived from CelebA: non-commercial research purposes only (CelebA agreement); "
        "CelebAMask-HQ adds the same restriction.",
    },
}


class DownloadError(UserError):
    """A download that failed for good (after its retries, or on a non-retryable answer)."""


class _Retryable(Exception):
    """A failed attempt worth retrying (truncated body, inconsistent range answer)."""


# ---------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def file_hashes(path: str | os.PathLike, chunk: int = CHUNK) -> dict[str, str]:
    """sha256 and md5 of a file, in one pass."""
    s, m = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            s.update(block)
            m.update(block)
    return {"sha256": s.hexdigest(), "md5": m.hexdigest()}


def _expected_hashes(sha256: str | None, md5: str | None) -> dict[str, str]:
    out = {}
    for algo, value in (("sha256", sha256), ("md5", md5)):
        if value:
            out[algo] = value.strip().lower()
    return out


def _check_hashes(path: Path, expected: dict[str, str], url: str | None = None) -> dict[str, str]:
    """Return the file's hashes; raise ValueError naming file, expected and actual on a mismatch."""
    actual = file_hashes(path)
    for algo, want in expected.items():
        if actual[algo] != want:
            src = f" (downloaded from {url})" if url else ""
            raise ValueError(f"{path}: {algo} mismatch{src}: expected {want}, got {actual[algo]}")
    return actual


def part_path(dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def is_gdrive_url(url: str) -> bool:
    return (urllib.parse.urlsplit(url).hostname or "").lower() in _GDRIVE_HOSTS


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes START-END/TOTAL` or `bytes */TOTAL` -> (start, total); None where absent."""
    if not value:
        return None, None
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if not m:
        return None, None
    start = int(m[1]) if m[1] is not None else None
    total = int(m[2]) if m[2] != "*" else None
    return start, total


# ---------------------------------------------------------------- Google Drive confirmation


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self.links: list[str] = []
        self._form: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._form = {
                "id": a.get("id", ""),
                "action": a.get("action", ""),
                "method": a.get("method", "get").lower(),
                "inputs": {},
            }
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            if a.get("type", "text").lower() in ("hidden", "text"):
                self._form["inputs"][a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None


def gdrive_confirm_url(page_url: str, body: bytes, set_cookies: list[str] | tuple = ()) -> str:
    """The url that fetches the file behind a Google Drive "can't scan for viruses" page.

    Understands the three forms Drive has used: a ``<form id="download-form">`` with hidden
    inputs (id, export, confirm, uuid; current), a link carrying ``confirm=`` (older), and a
    ``download_warning*`` cookie whose value is the confirm token (oldest). Raises DownloadError
    for a quota-exceeded page or a page with none of these.
    """
    text = body.decode("utf-8", errors="replace")
    if "Quota exceeded" in text or "Too many users have viewed or downloaded this file" in text:
        raise DownloadError(
            f"{page_url}: Google Drive download quota exceeded for this file; try again "
            "in 24 hours, or download it in a browser and pass its location (url=, "
            "AMBIENT_<NAME>_URL, or put it at the destination path)"
        )
    parser = _PageParser()
    try:
        parser.feed(text)
    except Exception:  # a malformed page: fall through to the other forms
        pass
    for form in parser.forms:
        if form["method"] == "get" and (form["id"] == "download-form" or "confirm" in form["inputs"]):
            action = urllib.parse.urljoin(page_url, html.unescape(form["action"]) or page_url)
            query = urllib.parse.urlencode(form["inputs"])
            return f"{action}{'&' if '?' in action else '?'}{query}" if query else action
    for href in parser.links:
        href = html.unescape(href)
        if "confirm=" in href and ("export=download" in href or "/download" in href):
            return urllib.parse.urljoin(page_url, href)
    for header in set_cookies:
        m = re.match(r"\s*download_warning[^=]*=([^;]+)", header)
        if m:
            parts = urllib.parse.urlsplit(page_url)
            query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "confirm"]
            query.append(("confirm", m[1]))
            return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    snippet = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))[:200].strip()
    raise DownloadError(
        f"{page_url}: Google Drive answered with an HTML page instead of the file, and "
        f"it holds no download confirmation (is the file shared publicly?): {snippet!r}"
    )


# ---------------------------------------------------------------- download


def part_meta_path(part: Path) -> Path:
    """Beside a .part: the url and the validator (ETag or Last-Modified) its bytes came with."""
    return part.with_name(part.name + ".json")


def _read_part_meta(part: Path) -> dict:
    try:
        return json.loads(part_meta_path(part).read_text())
    except (OSError, ValueError):
        return {}


def _drop_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    part_meta_path(part).unlink(missing_ok=True)


def _fetch(
    opener, url: str, part: Path, timeout: float, progress: bool, gdrive: bool, desc: str, checked: bool = False
) -> str | None:
    """One attempt: append to / restart `part`. Returns None when complete, or a new url to
    follow (Google Drive confirmation). Raises _Retryable, OSError, URLError, HTTPException.

    A .part is resumed only when something can vouch for its bytes: the validator it was started
    with (sent as If-Range, so a changed file comes back whole), or a checksum the finished file
    must match (`checked`). A .part that nothing vouches for is started again."""
    offset, validator = _resume_point(part, url, desc, checked)
    resp = _request(opener, url, part, offset, validator, timeout)
    if resp is None:  # the .part is already whole
        return None
    with resp:
        ctype = (resp.headers.get("Content-Type") or "").lower()
        disposition = (resp.headers.get("Content-Disposition") or "").lower()
        if gdrive and ctype.startswith("text/html") and "attachment" not in disposition:
            body = resp.read(_MAX_HTML)
            return gdrive_confirm_url(resp.geturl(), body, resp.headers.get_all("Set-Cookie") or [])
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        offset, mode, total = _write_mode(resp, url, part, offset, length, desc)
        received = _receive(resp, part, mode, offset, total, desc, progress)
    if length is not None and received != length:
        raise _Retryable(f"truncated: got {offset + received} of {offset + length} bytes")
    return None


def _resume_point(part: Path, url: str, desc: str, checked: bool) -> tuple[int, str | None]:
    """(offset, validator) to resume `part` from: (0, None) when nothing vouches for its bytes (then it is dropped)."""
    offset = part.stat().st_size if part.exists() else 0
    meta = _read_part_meta(part) if offset else {}
    validator = (meta.get("etag") or meta.get("last_modified")) if meta.get("url") == url else None
    if offset and not validator and not checked:
        _log(f"{desc}: {part} has no validator and no checksum to check it against; downloading from the start")
        _drop_part(part)
        offset = 0
    return offset, validator


def _request(opener, url: str, part: Path, offset: int, validator: str | None, timeout: float):
    """The open response for the bytes from `offset` on, or None when the server has none left and
    the .part is whole (HTTP 416 at its full length)."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    try:
        return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the .part may already be whole
            _, total = _parse_content_range(e.headers.get("Content-Range"))
            e.close()
            if total == offset:
                return None
            _drop_part(part)
            raise _Retryable(f"server refused to resume at byte {offset} (HTTP 416); restarting") from None
        raise


def _write_mode(resp, url: str, part: Path, offset: int, length: int | None, desc: str) -> tuple[int, str, int | None]:
    """(offset, file mode, total size): append to the .part on a matching 206, else start it again
    (recording the url and validator the new bytes come with)."""
    status = resp.getcode() or 200  # file:// answers have no status
    if offset and status == 206:
        start, total = _parse_content_range(resp.headers.get("Content-Range"))
        if start != offset:
            _drop_part(part)
            raise _Retryable(f"asked for bytes {offset}- but the server sent a range starting at {start}")
        mode = "ab"
    else:
        if offset:
            _log(
                f"{desc}: the server sent the whole file (HTTP {status}: it changed, or does not resume); "
                "downloading from the start"
            )
        offset, mode, total = 0, "wb", length
        write_json(
            part_meta_path(part),
            {"url": url, "etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")},
        )
    if length is not None:
        total = offset + length
    return offset, mode, total


def _receive(resp, part: Path, mode: str, offset: int, total: int | None, desc: str, progress: bool) -> int:
    """Stream the body into `part` (fsynced); the number of bytes received."""
    received = 0
    with (
        open(part, mode) as f,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not progress,
            file=sys.stderr,
            leave=False,
        ) as bar,
    ):
        while chunk := resp.read(CHUNK):
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
        f.flush()
        os.fsync(f.fileno())
    return received


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 3,
    timeout: float = 60,
    progress: bool = True,
    *,
    gdrive: bool | None = None,
    backoff: float = 1.0,
    max_confirm: int = 5,
) -> Path:
    """Download `url` to `dest` safely; return `dest`.

    The bytes go to ``dest + '.part'`` (same folder); an existing ``.part`` is resumed with a
    ``Range`` request (a server that answers 200 instead of 206 restarts it). Connection errors,
    timeouts, 5xx/408/429 answers and truncated bodies (fewer bytes than Content-Length) are
    retried up to `retries` times with exponential backoff (`backoff` seconds, doubling). When the
    body is complete the checksum(s) are verified: on a mismatch the ``.part`` is deleted and
    ValueError names the file, the expected and the actual hash. Only a verified file is renamed
    (os.replace) onto `dest`. An existing `dest` is not downloaded again: it is verified against
    the checksum(s) given (ValueError if it differs) and returned.

    `gdrive` (default: by host name) enables the Google Drive confirmation-page handling.
    """
    dest = Path(dest)
    expected = _expected_hashes(sha256, md5)
    if dest.exists():
        return _verify_existing(dest, expected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    if gdrive is None:
        gdrive = is_gdrive_url(url)
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    current, failures, confirms = url, 0, 0
    while True:
        try:
            nxt = _fetch(opener, current, part, timeout, progress, gdrive, dest.name, checked=bool(expected))
            if nxt is None:
                break
            confirms += 1
            if confirms > max_confirm:
                raise DownloadError(
                    f"{url}: Google Drive kept answering with a confirmation page "
                    f"({confirms} times); download it in a browser instead"
                )
            current = nxt
            continue
        except urllib.error.HTTPError as e:
            err = _retryable_http_error(e, current, dest)
        except (_Retryable, urllib.error.URLError, HTTPException, OSError) as e:
            err = f"{e.__class__.__name__}: {e}" if not isinstance(e, _Retryable) else str(e)
        failures += 1
        _wait_or_give_up(url, dest, part, err, failures, retries, backoff)
    _verify_and_rename(part, dest, expected, url)
    return dest


def _verify_existing(dest: Path, expected: dict[str, str]) -> Path:
    if expected:
        try:
            _check_hashes(dest, expected)
        except ValueError as e:
            raise ValueError(
                f"{e}; it already exists, so it was not downloaded again: delete it to download it again"
            ) from None
    return dest


def _retryable_http_error(e: urllib.error.HTTPError, url: str, dest: Path) -> str:
    """The message of a retryable HTTP error (5xx, 408, 429); DownloadError for any other."""
    e.close()
    if not (e.code >= 500 or e.code in (408, 429)):
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason} (while downloading {dest})") from None
    return f"HTTP {e.code} {e.reason}"


def _wait_or_give_up(url: str, dest: Path, part: Path, err: str, failures: int, retries: int, backoff: float) -> None:
    """After failed attempt number `failures`: DownloadError past `retries`, else the backoff wait."""
    if failures > retries:
        kept = (
            (f"; the partial file {part} ({part.stat().st_size} bytes) is kept and the next try resumes from it")
            if part.exists()
            else ""
        )
        raise DownloadError(f"{url}: download to {dest} failed after {failures} attempts: {err}{kept}")
    wait = backoff * 2 ** (failures - 1)
    _log(f"{dest.name}: attempt {failures} failed ({err}); retrying in {wait:.1f}s")
    if wait > 0:
        time.sleep(wait)


def _verify_and_rename(part: Path, dest: Path, expected: dict[str, str], url: str) -> None:
    """Check the finished .part against the checksum(s) (deleting it on a mismatch), then move it onto `dest`."""
    try:
        _check_hashes(part, expected, url)
    except ValueError as e:
        _drop_part(part)
        raise ValueError(f"{e}; the download was deleted") from None
    os.replace(part, dest)
    part_meta_path(part).unlink(missing_ok=True)


# ---------------------------------------------------------------- safe extraction


def _check_member_name(name: str, archive: Path) -> None:
    if not name or "\x00" in name:
        raise ValueError(f"{archive}: refusing member {name!r}: empty or invalid name")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise ValueError(f"{archive}: refusing member {name!r}: absolute path")
    if ".." in PurePosixPath(norm).parts:
        raise ValueError(f"{archive}: refusing member {name!r}: '..' path component")


def _zip_members(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        _check_member_name(info.filename, archive)
        ftype = stat.S_IFMT(info.external_attr >> 16)  # Unix file type bits, 0 when absent
        if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
            kind = "symlink" if ftype == stat.S_IFLNK else "device or special file"
            raise ValueError(f"{archive}: refusing member {info.filename!r}: {kind}")


def _tar_members(tf: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tf.getmembers()
    for m in members:
        _check_member_name(m.name, archive)
        if m.issym() or m.islnk():
            raise ValueError(f"{archive}: refusing member {m.name!r}: link to {m.linkname!r}")
        if not (m.isfile() or m.isdir()):
            raise ValueError(f"{archive}: refusing member {m.name!r}: device or special file")
    return members


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract a .zip or .tar[.gz|.bz2|.xz]/.tgz archive into the new folder `target`, safely.

    Every member is checked before anything is written: an absolute path, a ``..`` component,
    a symlink or hardlink (all links are refused) or a device/FIFO entry raises ValueError naming
    the member. The archive is extracted into a temporary folder beside `target`, which is then
    renamed onto `target` (so `target` either is complete or does not exist). `target` must not
    exist yet (an empty folder is allowed). The format is detected from the content.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive not found")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target}: already exists; delete it to extract {archive} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".extracting", dir=target.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _zip_members(zf, archive)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                members = _tar_members(tf, archive)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(tmp, members=members)
        else:
            raise ValueError(f"{archive}: not a zip or tar archive")
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- paper datasets

_DEFAULT = object()


def _env_key(name: str, what: str) -> str:
    return f"AMBIENT_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_{what}"


def source(name: str) -> dict:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown dataset source {name!r}: use one of {sorted(SOURCES)}") from None


def source_url(name: str, url: str | None = None) -> str | None:
    """The url to fetch `name` from: `url` if given, else $AMBIENT_<NAME>_URL, else the registry's."""
    src = source(name)
    return url or os.environ.get(_env_key(name, "URL")) or (src["urls"][0] if src["urls"] else None)


def source_checksums(name: str, sha256=_DEFAULT, md5=_DEFAULT) -> dict[str, str | None]:
    """Checksums to verify: argument, else $AMBIENT_<NAME>_SHA256/_MD5 (empty or 'none' turns the
    check off), else the registry's."""
    src = source(name)
    out = {}
    for algo, given in (("sha256", sha256), ("md5", md5)):
        if given is _DEFAULT:
            env = os.environ.get(_env_key(name, algo.upper()))
            given = src[algo] if env is None else (None if env.strip().lower() in ("", "none") else env)
        out[algo] = given or None
    return out


def list_images(root: str | os.PathLike, patterns: list[str] | str) -> tuple[list[Path], str]:
    """Image files under `root` matching the first layout glob that matches any; sorted."""
    root = Path(root)
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    for pattern in patterns:
        files = [
            p
            for p in root.glob(pattern)
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in data.IMAGE_SUFFIXES
        ]
        if files:
            return sorted(files, key=lambda p: p.relative_to(root).as_posix()), pattern
    raise ValueError(f"{root}: no image files match the expected layout {patterns}; is this the right archive?")


def choose_subset(num_files: int, num_images: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `num_images` of `num_files` sorted files, chosen by `seed`."""
    if num_images is None or num_images == num_files:
        return np.arange(num_files)
    if not 1 <= num_images <= num_files:
        raise ValueError(f"num_images={num_images}: must be in 1..{num_files} (the files available)")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_files, num_images, replace=False))


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive lock on `lock_path` (POSIX flock; a no-op where fcntl is missing), so that
    parallel jobs preparing from the same raw_dir download and extract only once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another process that holds {lock_path}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_and_extract(
    name: str,
    raw_dir: str | os.PathLike,
    url: str | None = None,
    *,
    sha256=_DEFAULT,
    md5=_DEFAULT,
    progress: bool = True,
    **download_kw,
) -> tuple[Path, dict]:
    """Make sure ``raw_dir/<name>/`` holds the extracted source; return it and its source record."""
    with _exclusive(Path(raw_dir) / f".{name}.lock"):
        return _fetch_and_extract(name, raw_dir, url, sha256=sha256, md5=md5, progress=progress, **download_kw)


def _fetch_and_extract(
    name: str, raw_dir: str | os.PathLike, url: str | None, *, sha256, md5, progress: bool, **download_kw
) -> tuple[Path, dict]:
    src = source(name)
    raw_dir = Path(raw_dir)
    root = raw_dir / name
    record_path = root / SOURCE_RECORD
    if root.is_dir() and any(root.iterdir()):
        record = {"name": name}
        if record_path.is_file():
            record = json.loads(record_path.read_text())
        return root, record
    checks = source_checksums(name, sha256, md5)
    archive = raw_dir / src["filename"]
    use_url = source_url(name, url)
    if not archive.exists():
        if use_url is None:
            pages = " or ".join(src.get("pages", [])) or src["homepage"]
            raise ValueError(
                f"{name}: no download url is known for {src['filename']} (see {pages}); download it "
                f"yourself and pass url=, set {_env_key(name, 'URL')} (http(s):// or file://), or put "
                f"the archive at {archive} or its extracted files under {root}/"
            )
        download(use_url, archive, sha256=checks["sha256"], md5=checks["md5"], progress=progress, **download_kw)
        hashes = file_hashes(archive)
    else:
        hashes = _check_hashes(archive, {k: v for k, v in checks.items() if v})
    record = {"name": name, "url": use_url, "archive": src["filename"], **hashes}
    tmp_target = raw_dir / f".{name}.extracted"
    if tmp_target.exists():
        shutil.rmtree(tmp_target)
    safe_extract(archive, tmp_target)
    write_json(tmp_target / SOURCE_RECORD, record)
    if root.exists():
        root.rmdir()  # empty (checked above)
    os.replace(tmp_target, root)
    return root, record


def _load_resized(paths: list[Path], resolution: int, desc: str, progress: bool) -> np.ndarray:
    """The images at `paths`, center-cropped/resized to `resolution` RGB, stacked (with a progress bar)."""
    return np.stack(
        [
            data.load_image_file(p, resolution, 3)
            for p in tqdm(paths, desc=desc, unit="img", disable=not progress, file=sys.stderr)
        ]
    )


def _heldout_indices(num_files: int, idx: np.ndarray, heldout_images: int | None, seed: int) -> np.ndarray:
    """The files outside the training subset `idx`; with `heldout_images`, a sorted seeded choice of them."""
    rest = np.setdiff1d(np.arange(num_files), idx)
    if heldout_images is not None:
        if not 1 <= heldout_images <= len(rest):
            raise ValueError(
                f"heldout_images={heldout_images}: must be in 1..{len(rest)} (the images outside the training subset)"
            )
        rest = np.sort(np.random.default_rng(seed + 1).choice(rest, heldout_images, replace=False))
    return rest


def _write_heldout(
    name: str,
    heldout_out: str | os.PathLike,
    heldout_images: int | None,
    files: list[Path],
    idx: np.ndarray,
    root: Path,
    info: dict,
    resolution: int,
    seed: int,
    progress: bool,
) -> None:
    """Write the held-out split (the files outside the training subset) to `heldout_out`."""
    rest = _heldout_indices(len(files), idx, heldout_images, seed)
    held = [files[i] for i in rest]
    held_rel = [p.relative_to(root).as_posix() for p in held]
    held_images = _load_resized(held, resolution, f"prepare {name} held-out", progress)
    data.write_image_zip(
        heldout_out,
        held_images,
        [f"{name}:{r}" for r in held_rel],
        {
            **info,
            "split": "heldout",
            "subset_indices": [int(i) for i in rest],
            "subset_files": held_rel,
            "heldout_rule": "the files outside the training subset; with heldout_images, "
            "numpy.random.default_rng(seed + 1).choice of them, sorted",
        },
    )


def prepare_paper_dataset(
    name: str,
    raw_dir: str | os.PathLike,
    out_zip: str | os.PathLike,
    resolution: int = 64,
    num_images: int | None = 3000,
    seed: int = 0,
    url: str | None = None,
    *,
    sha256=_DEFAULT,
    md5=_DEFAULT,
    progress: bool = True,
    heldout_out: str | os.PathLike | None = None,
    heldout_images: int | None = None,
    **download_kw,
) -> dict:
    """Download (if needed), extract, choose a seeded subset, crop/resize and write `out_zip`.

    See the module docstring for the recipe. `url` overrides the registry (as does
    $AMBIENT_<NAME>_URL); `sha256`/`md5` override the registry's checksums (None: do not check;
    also $AMBIENT_<NAME>_SHA256/_MD5). The registry's checksums still apply to an overridden url,
    since a mirror should serve the same file. Returns the manifest written.
    """
    src = source(name)
    root, record = fetch_and_extract(name, raw_dir, url, sha256=sha256, md5=md5, progress=progress, **download_kw)
    files, pattern = list_images(root, src["images"])
    idx = choose_subset(len(files), num_images, seed)
    chosen = [files[i] for i in idx]
    rel = [p.relative_to(root).as_posix() for p in chosen]
    images = _load_resized(chosen, resolution, f"prepare {name}", progress)
    info = {
        "source": name,
        "description": src["description"],
        "url": record.get("url"),
        "archive": record.get("archive", src["filename"]),
        "archive_sha256": record.get("sha256"),
        "archive_md5": record.get("md5"),
        "layout": pattern,
        "num_available": len(files),
        "seed": int(seed),
        "subset_indices": [int(i) for i in idx],
        "subset_files": rel,
        "recipe": f"{src['recipe']}; {RECIPE}",
        "license": src["license"],
    }
    manifest = data.write_image_zip(out_zip, images, [f"{name}:{r}" for r in rel], {**info, "split": "train"})
    if heldout_out:
        _write_heldout(name, heldout_out, heldout_images, files, idx, root, info, resolution, seed, progress)
    return manifest
