"""Images made in-process: the member card's QR code."""

from __future__ import annotations

import io

import segno

# Choosing the best of the eight QR masks is half the cost of a code; any mask reads the same
# (the choice only evens out dark and light areas), so one is fixed.
QR_MASK = 0


def qr_png(data: str, *, scale: int = 12) -> bytes:
    buffer = io.BytesIO()
    qr = segno.make(data, error="m", micro=False, mask=QR_MASK)
    qr.save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()


def qr_svg(data: str, *, scale: int = 8) -> str:
    """The QR code as inline SVG (the Mini App's pages): dark on white with its quiet zone,
    whatever the page's theme, so a till's scanner reads it."""
    qr = segno.make(data, error="m", micro=False, mask=QR_MASK)
    svg: str = qr.svg_inline(scale=scale, border=4, dark="#000", light="#fff", omitsize=True)
    return svg
