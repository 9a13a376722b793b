"""Writes images/scene-N.png, the images of the example conversations (our own:
quantised gradients and tiles, a few kB each). Run: python3 make_images.py"""
import struct
import zlib


def png(path, w, h, seed):
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            inside = (x // 40 + y // 40 + seed) % 3 == 0
            r = ((x // 20) * 20 * 255 // w + seed * 40) % 256
            g = ((y // 20) * 20 * 255 // h + seed * 90) % 256
            b = 200 if inside else (seed * 50) % 256
            row += bytes([r, g, b])
        rows.append(bytes(row))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


for i, (w, h) in enumerate([(320, 180), (320, 180), (240, 240), (320, 180), (180, 320), (320, 180)]):
    png(f"images/scene-{i + 1}.png", w, h, i)
