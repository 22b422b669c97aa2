"""Images made in-process: the member card's QR code."""

from __future__ import annotations

import struct
import zlib

import segno

# Choosing the best of the eight QR masks is half the cost of a code; any mask reads the same
# (the choice only evens out dark and light areas), so one is fixed.
QR_MASK = 0


QR_BORDER = 4  # modules of quiet zone around the code, as the QR standard asks
# zlib's default: 9 took 0.75 ms a card for 31 bytes less (of ~300).
PNG_COMPRESSION = 6


def qr_png(data: str, *, scale: int = 12) -> bytes:
    """The QR code as a black and white PNG, pixel for pixel what segno's PNG writer gives,
    written a row at a time instead of a pixel at a time and compressed at zlib's default
    level instead of its slowest (a few dozen bytes more): 0.5 ms instead of 1.5, cheap
    enough to make on the event loop."""
    qr = segno.make(data, error="m", micro=False, mask=QR_MASK)
    return _png(qr.matrix, scale, QR_BORDER)


def _png(matrix: tuple[bytearray, ...], scale: int, border: int) -> bytes:
    """A 1-bit greyscale PNG of ``matrix`` (1 = dark module), as ``segno``'s ``write_png``
    lays it out: each module row one scanline, then ``scale - 1`` rows marked "same as above"
    (PNG filter "Up" over zero bytes), and the quiet zone in light rows and columns."""
    width = (len(matrix[0]) + 2 * border) * scale
    row_bytes = (width + 7) // 8
    padding = "0" * (row_bytes * 8 - width)  # bits after the last pixel of a row
    light, dark = "1" * scale, "0" * scale  # grey level 1 is white, 0 black
    side = "1" * (border * scale)

    def scanline(bits: str) -> bytes:
        return b"\0" + int(bits + padding, 2).to_bytes(row_bytes, "big")

    quiet = scanline("1" * width) * (border * scale)
    same_as_above = (b"\2" + bytes(row_bytes)) * (scale - 1)
    rows = [quiet]
    for row in matrix:
        rows.append(scanline(side + "".join(dark if m else light for m in row) + side))
        rows.append(same_as_above)
    rows.append(quiet)
    header = struct.pack(">2I5B", width, width, 1, 0, 0, 0, 0)
    return b"".join((
        b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header),
        _chunk(b"IDAT", zlib.compress(b"".join(rows), PNG_COMPRESSION)), _chunk(b"IEND", b""),
    ))


def _chunk(name: bytes, data: bytes) -> bytes:
    body = name + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def qr_svg(data: str, *, scale: int = 8) -> str:
    """The QR code as inline SVG (the Mini App's pages): dark on white with its quiet zone,
    whatever the page's theme, so a till's scanner reads it."""
    qr = segno.make(data, error="m", micro=False, mask=QR_MASK)
    svg: str = qr.svg_inline(scale=scale, border=4, dark="#000", light="#fff", omitsize=True)
    return svg
