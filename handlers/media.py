"""Images made in-process: the member card's QR code."""

from __future__ import annotations

import io

import segno


def qr_png(data: str, *, scale: int = 12) -> bytes:
    buffer = io.BytesIO()
    segno.make(data, error="m", micro=False).save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()
