"""Rebuilds handlers/fonts/NotoSansSC-Subset.otf, the font the charts draw Chinese with.

Source: Noto Sans CJK SC Regular (SIL Open Font License 1.1) from Debian's fonts-noto-cjk
(`apt-get install fonts-noto-cjk`). Kept: every character of GB2312 (the 6,763 hanzi of levels
1 and 2 and its symbols), ASCII and Latin-1, CJK punctuation, full-width forms, and every
character of the Chinese templates and of the bundled program, so any label a chart can show
is covered (tests/test_charts.py checks it). Run: python bench/subset_font.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
TARGET = ROOT / "handlers" / "fonts" / "NotoSansSC-Subset.otf"
SC = 2  # Noto Sans CJK SC in the collection


def characters() -> set[str]:
    chars = {chr(c) for c in range(0x20, 0x7F)} | {chr(c) for c in range(0xA0, 0x100)}
    chars |= {chr(c) for c in range(0x3000, 0x3040)} | {chr(c) for c in range(0xFF01, 0xFF5F)}
    chars |= set("¥€£•·—–…‰℃←↑→↓√×÷")
    for high in range(0xA1, 0xF8):
        for low in range(0xA1, 0xFF):
            try:
                chars.add(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    for path in [*(ROOT / "templates" / "zh").rglob("*"), ROOT / "bot" / "default_program.toml"]:
        if path.is_file():
            chars |= set(path.read_text(encoding="utf-8"))
    return {c for c in chars if (c.isprintable() and not c.isspace()) or c == " "}


def main() -> None:
    font = TTCollection(SOURCE).fonts[SC]
    cmap = font.getBestCmap()
    wanted = sorted(ord(c) for c in characters() if ord(c) in cmap)
    options = subset.Options()
    options.layout_features = []  # charts need no vertical forms or locale variants
    options.name_IDs = ["*"]  # keeps the copyright and licence records
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=wanted)
    subsetter.subset(font)
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    font.save(TARGET)
    print(f"{TARGET}: {len(wanted)} characters, {TARGET.stat().st_size // 1024} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
