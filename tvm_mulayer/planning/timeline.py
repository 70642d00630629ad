"""PNG timelines (Gantt charts) of both processors, drawn with numpy and zlib only."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .partitioner import Event

# 3x5 glyphs: enough for lane names, panel titles and millisecond ticks
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", " ": "000000000000000",
    "A": "010101111101101", "C": "111100100100111", "D": "110101101101110", "E": "111100110100111",
    "G": "111100101101111", "I": "111010010010111", "M": "101111111101101", "O": "111101101101111",
    "P": "111101111100100", "R": "110101110101101", "S": "111100111001111", "T": "111010010010010",
    "U": "101101101101111", "Y": "101101010010010", "-": "000000111000000",
}
COLORS = {"cpu": ((52, 101, 164), (114, 159, 207)), "gpu": ((78, 154, 6), (138, 226, 52)),
          "copy": ((206, 92, 0), (252, 175, 62))}
CHAIN_COLORS = ((117, 80, 123), (196, 160, 0), (204, 0, 0))
LANES = ("gpu", "cpu", "copy")
SCALE, LEFT, LANE_H, WIDTH = 2, 70, 22, 1100


def _text(image, x, y, text):
    for char in text.upper():
        glyph = _GLYPHS.get(char, _GLYPHS[" "])
        for row in range(5):
            for col in range(3):
                if glyph[row * 3 + col] == "1":
                    image[y + row * SCALE:y + (row + 1) * SCALE, x + col * SCALE:x + (col + 1) * SCALE] = 0
        x += 4 * SCALE


def _png(path, image):
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_timeline(path, panels: dict) -> None:
    """One panel per entry of `panels` (name -> list of Event), three lanes each, on a shared
    time axis in milliseconds; the parts of each operator chain are underlined in its colour."""
    end = max((e.end for events in panels.values() for e in events), default=1e-3) or 1e-3
    panel_h = 24 + LANE_H * len(LANES) + 8
    height = 20 + panel_h * len(panels) + 30
    image = np.full((height, WIDTH, 3), 255, np.uint8)
    span = WIDTH - LEFT - 20
    x_of = lambda t: LEFT + int(span * t / end)  # noqa: E731
    y = 8
    chains = list(dict.fromkeys(e.chain for events in panels.values() for e in events if e.chain))
    for name, events in panels.items():
        _text(image, 4, y, name)
        y += 16
        for lane_index, lane in enumerate(LANES):
            top = y + lane_index * LANE_H
            _text(image, 4, top + 6, lane)
            image[top + LANE_H - 1, LEFT:LEFT + span] = 200
            lane_events = [e for e in events if e.lane == lane]
            for index, event in enumerate(lane_events):
                x0, x1 = x_of(event.start), max(x_of(event.end), x_of(event.start) + 1)
                image[top + 2:top + LANE_H - 3, x0:x1] = COLORS[lane][index % 2]
                if event.chain:  # a band under the parts of each operator chain, one colour per chain
                    image[top + LANE_H - 6:top + LANE_H - 3, x0:x1] = CHAIN_COLORS[chains.index(event.chain) % 3]
        y += LANE_H * len(LANES) + 8
    # time axis: ticks at round milliseconds
    step = 10 ** np.floor(np.log10(end * 1e3 / 5)) if end > 0 else 1
    tick = 0.0
    while tick <= end * 1e3 + 1e-9:
        x = x_of(tick / 1e3)
        image[y:y + 6, x] = 0
        _text(image, max(x - 6, 0), y + 9, f"{tick:g}")
        tick += step
    _text(image, LEFT + span - 20, y + 9, "MS")
    _png(path, image)


def measured_events(executable, inputs=None) -> list:
    """Events of one traced run of `executable` (see `Executable.trace`)."""
    calls = executable.trace(inputs)
    origin = min((call["start"] for call in calls), default=0.0)
    return [Event(c["lane"], c["symbol"], c["start"] - origin, c["end"] - origin) for c in calls]
