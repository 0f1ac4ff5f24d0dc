"""Size limits checked on a file's header, before any pixel is decoded.

A 415 KB PNG can declare 20000 x 20000 pixels: decoding it took 4.6 GB and 34 s on the
device. The header states the size, so an image (or a video stream) larger than a face
photo could ever need is refused first, with the size in the message.
"""

from __future__ import annotations

import struct

from edge_runtime.errors import MediaError

MAX_IMAGE_SIDE = 12_000  # px: a 100 MP photo is far above any face crop's need
MAX_IMAGE_PIXELS = 50_000_000
MAX_VIDEO_SIDE = 4_096  # px per frame (4K DCI); cameras and clips for a door are far smaller
MAX_VIDEO_PIXELS = 4_096 * 2_304


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF, BMP, WebP, PNM or TIFF header; None otherwise."""
    try:
        return _size(data)
    except (struct.error, IndexError, ValueError):
        return None


def check_image_header(data: bytes, source: str) -> None:
    """Refuse an image whose header is unknown, unreadable or declares a size over the limits."""
    size = image_size(data)
    if size is None:
        raise MediaError(f"image is corrupt or in an unsupported format (PNG, JPEG, BMP, GIF, "
                         f"WebP, PNM, TIFF are read): {source}")
    check_dimensions(*size, source=source, what="image", max_side=MAX_IMAGE_SIDE,
                     max_pixels=MAX_IMAGE_PIXELS)


def check_dimensions(width: int, height: int, *, source: str, what: str,
                     max_side: int = MAX_VIDEO_SIDE, max_pixels: int = MAX_VIDEO_PIXELS) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(f"{source}: {what} declares an empty size {width}x{height}")
    if max(width, height) > max_side or width * height > max_pixels:
        raise MediaError(
            f"{source}: {what} is {width}x{height} pixels, over the limit of {max_side} px a "
            f"side and {max_pixels / 1e6:g} MP; refused before decoding")


def _size(d: bytes) -> tuple[int, int] | None:
    if d.startswith(b"\x89PNG\r\n\x1a\n") and d[12:16] == b"IHDR":
        return struct.unpack(">II", d[16:24])
    if d[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", d[6:10])
    if d[:2] == b"BM":
        w, h = struct.unpack("<ii", d[18:26])
        return w, abs(h)
    if d[:4] == b"RIFF" and d[8:12] == b"WEBP":
        kind = d[12:16]
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", d[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if kind == b"VP8L":
            b = d[21:25]
            w = 1 + (((b[1] & 0x3F) << 8) | b[0])
            h = 1 + (((b[3] & 0xF) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
            return w, h
        if kind == b"VP8X":
            return 1 + int.from_bytes(d[24:27], "little"), 1 + int.from_bytes(d[27:30], "little")
        return None
    if d[:2] == b"\xff\xd8":
        return _jpeg_size(d)
    if d[:1] == b"P" and d[1:2] in b"123456" and len(d) > 2:
        fields = d[2:256].split(b"#")[0].split()  # comments before the size are rare
        return int(fields[0]), int(fields[1])
    if d[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(d)
    return None


def _jpeg_size(d: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(d):
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", d[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            h, w = struct.unpack(">HH", d[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _tiff_size(d: bytes) -> tuple[int, int] | None:
    e = "<" if d[:2] == b"II" else ">"
    off = struct.unpack(e + "I", d[4:8])[0]
    n = struct.unpack(e + "H", d[off:off + 2])[0]
    found: dict[int, int] = {}
    for k in range(n):
        entry = d[off + 2 + 12 * k: off + 14 + 12 * k]
        tag, typ = struct.unpack(e + "HH", entry[:4])
        if tag in (256, 257):
            found[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), entry[8:10 if typ == 3
                                                                           else 12])[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None
