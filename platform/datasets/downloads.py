"""Streamed downloads of a snapshot: one file, or a tar of all, both with HTTP ranges.

Nothing is built in memory: bytes are read from storage a chunk at a time as the
client takes them. The tar is deterministic (ustar headers from the recorded
paths and sizes, the snapshot's creation time as every mtime, files in path
order), so every member's offset is known from the sizes alone: its length and
any byte range are served without reading what comes before.
"""

import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404

from . import services
from .models import DownloadLog, Snapshot, SnapshotFile

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
END_OF_ARCHIVE = 2 * BLOCK


@dataclass(frozen=True)
class Segment:
    """A run of bytes: literal ``data``, or ``size`` bytes of the snapshot file ``path``."""

    size: int
    data: bytes = b""
    path: str = ""


def _padding(size: int) -> int:
    return -size % BLOCK


def tar_size(snapshot: Snapshot) -> int:
    sizes = snapshot.files.values_list("size", flat=True).iterator(chunk_size=5000)
    return sum(BLOCK + size + _padding(size) for size in sizes) + END_OF_ARCHIVE


def tar_header(snapshot: Snapshot, path: str, size: int) -> bytes:
    info = tarfile.TarInfo(f"{snapshot.name}/{path}")
    info.size = size
    info.mtime = int(snapshot.created_at.timestamp())
    info.mode = 0o644
    header = info.tobuf(format=tarfile.USTAR_FORMAT)
    if len(header) != BLOCK:  # cannot happen for ustar; offsets rely on it
        raise ValueError(f"{path}: tar header of {len(header)} bytes")
    return header


def tar_segments(snapshot: Snapshot, start: int) -> Iterator[tuple[int, Segment]]:
    """``(offset, segment)`` of the tar from the member holding byte ``start`` on.

    Members wholly before ``start`` are skipped by their sizes alone: no header is
    built and nothing is read for them.
    """
    offset = 0
    rows = snapshot.files.order_by("path").values_list("path", "size")
    for path, size in rows.iterator(chunk_size=2000):
        member = BLOCK + size + _padding(size)
        if offset + member > start:
            yield offset, Segment(BLOCK, data=tar_header(snapshot, path, size))
            yield offset + BLOCK, Segment(size, path=path)
            if _padding(size):
                yield offset + BLOCK + size, Segment(_padding(size), data=bytes(_padding(size)))
        offset += member
    yield offset, Segment(END_OF_ARCHIVE, data=bytes(END_OF_ARCHIVE))


def file_segments(record: SnapshotFile, start: int) -> Iterator[tuple[int, Segment]]:
    yield 0, Segment(record.size, path=record.path)


def read_range(
    snapshot: Snapshot, segments: Iterator[tuple[int, Segment]], start: int, end: int
) -> Iterator[bytes]:
    """Bytes ``start`` to ``end`` (inclusive) of the stream the segments make."""
    for offset, segment in segments:
        if offset > end:
            return
        first = max(start, offset) - offset
        last = min(end, offset + segment.size - 1) - offset
        if last < first:
            continue
        if segment.path:
            yield from _read_file(snapshot.storage_prefix + segment.path, first, last - first + 1)
        else:
            yield segment.data[first : last + 1]


def _read_file(name: str, offset: int, length: int) -> Iterator[bytes]:
    with default_storage.open(name, "rb") as handle:
        handle.seek(offset)
        while length > 0:
            chunk = handle.read(min(CHUNK, length))
            if not chunk:
                raise OSError(f"{name} is shorter than its recorded size")
            length -= len(chunk)
            yield chunk


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The one byte range asked for, as inclusive (start, end); None for the whole.

    A header we do not serve (malformed, several ranges) means the whole body, as
    RFC 9110 allows; a range that starts past the end raises RangeNotSatisfiable.
    """
    match = _RANGE.match(header.strip()) if header else None
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiable
    if end < start:
        return None
    return start, end


def ranged_response(
    request,
    *,
    snapshot: Snapshot,
    size: int,
    segments: Callable[[int], Iterator[tuple[int, Segment]]],
    filename: str,
    content_type: str,
    etag: str,
    on_start: Callable[[int, str], Callable[[int], None]],
) -> HttpResponse:
    """A 200 or 206 streaming response over ``segments``, or 416 for a range past the end.

    ``on_start(bytes, range)`` is called once the response is decided (to log it) and
    returns a callback that gets the number of bytes the client actually took.
    """
    quoted = f'"{etag}"'
    header = request.headers.get("Range", "")
    if_range = request.headers.get("If-Range")
    if if_range and if_range != quoted:
        header = ""
    try:
        wanted = parse_range(header, size)
    except RangeNotSatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    start, end = wanted if wanted else (0, size - 1)
    length = end - start + 1 if size else 0
    done = on_start(length, f"{start}-{end}" if wanted else "")

    def body() -> Iterator[bytes]:
        sent = 0
        try:
            if length:
                for chunk in read_range(snapshot, segments(start), start, end):
                    sent += len(chunk)
                    yield chunk
        finally:
            done(sent)

    response = StreamingHttpResponse(
        body(), status=206 if wanted else 200, content_type=content_type
    )
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = quoted
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    if wanted:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response


@dataclass(frozen=True)
class Reader:
    """Who reads, and how they got in (a DownloadLog.Via value)."""

    via: str
    user: object = None
    token: object = None


def _logger(request, snapshot: Snapshot, path: str, reader: Reader):
    def start(length: int, byte_range: str) -> Callable[[int], None]:
        user = reader.user if getattr(reader.user, "is_authenticated", False) else None
        log = DownloadLog.objects.create(
            snapshot=snapshot, path=path, via=reader.via, user=user, token=reader.token,
            ip=request.META.get("REMOTE_ADDR") or None, byte_range=byte_range, bytes=length,
        )  # fmt: skip
        return lambda sent: DownloadLog.objects.filter(pk=log.pk).update(bytes_sent=sent)

    return start


def archive_response(request, snapshot: Snapshot, reader: Reader) -> HttpResponse:
    """The whole snapshot as a streamed, rangeable tar; the download is logged."""
    return ranged_response(
        request, snapshot=snapshot, size=tar_size(snapshot),
        segments=lambda start: tar_segments(snapshot, start), filename=f"{snapshot.name}.tar",
        content_type="application/x-tar", etag=snapshot.content_hash,
        on_start=_logger(request, snapshot, "", reader),
    )  # fmt: skip


def file_response(request, record: SnapshotFile, reader: Reader) -> HttpResponse:
    """One file of a snapshot, streamed and rangeable; the download is logged."""
    snapshot = record.snapshot
    return ranged_response(
        request, snapshot=snapshot, size=record.size,
        segments=lambda start: file_segments(record, start),
        filename=record.path.rsplit("/", 1)[-1], content_type="application/octet-stream",
        etag=record.sha256, on_start=_logger(request, snapshot, record.path, reader),
    )  # fmt: skip


def readable_snapshot(name: str, user, token=None, key: str = "") -> tuple[Snapshot, Reader]:
    """The snapshot ``name`` and who reads it; 404 for anyone it is not shared with (a private
    snapshot's name is not revealed to a wrong key or token)."""
    snapshot = get_object_or_404(Snapshot.objects.select_related("study"), name=name)
    try:
        via = services.access_via(snapshot, user, key, token)
    except PermissionDenied:
        raise Http404 from None
    return snapshot, Reader(via=via, user=user, token=token)
