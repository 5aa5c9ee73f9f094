"""Download primitives, below the dataset pipeline and the metrics' weights: one file over HTTP(S)
(or file://), safely.

`download` streams to ``<dest>.part`` beside the destination, resumes an interrupted .part with an
HTTP ``Range`` request (only when its validator or a checksum vouches for its bytes), retries
connection errors, timeouts, 5xx/408/429 answers and truncated bodies with exponential backoff,
verifies the checksum(s) (`file_hashes`, `check_hashes`) and only then renames the file onto its
destination. Only the standard library (urllib) is used for HTTP. Google Drive's "can't scan this
file for viruses" confirmation page for large files is handled by `gdrive_confirm_url`.

Users: `ambient.pipeline.download` (the paper datasets) and `ambient.eval.weights` (the Inception
weights).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from http.client import HTTPException
from http.cookiejar import CookieJar
from pathlib import Path

from tqdm.auto import tqdm

from .entry import UserError
from .utils import write_json

USER_AGENT = "Mozilla/5.0 (compatible; ambient-download/0.1; +python-urllib)"
CHUNK = 1 << 20
_MAX_HTML = 2 << 20  # at most this much of an HTML (confirmation) page is read
_GDRIVE_HOSTS = {"drive.google.com", "docs.google.com", "drive.usercontent.google.com"}


class DownloadError(UserError):
    """A download that failed for good (after its retries, or on a non-retryable answer)."""


class _Retryable(Exception):
    """A failed attempt worth retrying (truncated body, inconsistent range answer)."""


# ---------------------------------------------------------------- helpers


def log(msg: str) -> None:
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


def check_hashes(path: Path, expected: dict[str, str], url: str | None = None) -> dict[str, str]:
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
        log(f"{desc}: {part} has no validator and no checksum to check it against; downloading from the start")
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
            log(
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
            check_hashes(dest, expected)
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
    log(f"{dest.name}: attempt {failures} failed ({err}); retrying in {wait:.1f}s")
    if wait > 0:
        time.sleep(wait)


def _verify_and_rename(part: Path, dest: Path, expected: dict[str, str], url: str) -> None:
    """Check the finished .part against the checksum(s) (deleting it on a mismatch), then move it onto `dest`."""
    try:
        check_hashes(part, expected, url)
    except ValueError as e:
        _drop_part(part)
        raise ValueError(f"{e}; the download was deleted") from None
    os.replace(part, dest)
    part_meta_path(part).unlink(missing_ok=True)
