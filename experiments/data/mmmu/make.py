"""Writes an MMMU-style multiple-choice fixture of our own: questions.jsonl (ten
one-turn conversations, each an image and a question with options A-D, the recorded
answer a letter) and images/q-N.png (quantised gradients, a few kB each).
Run: python3 make.py"""
import json
import struct
import zlib


def png(path, w, h, seed):
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            r = ((x // 16) * 16 * 255 // w + seed * 23) % 256
            g = ((y // 16) * 16 * 255 // h + seed * 61) % 256
            b = 220 if (x // 32 + y // 32 + seed) % 4 == 0 else (seed * 37) % 256
            row += bytes([r, g, b])
        rows.append(bytes(row))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


QUESTIONS = [
    ("Which colour covers most of the image?", ["red", "green", "blue", "grey"], "C"),
    ("How many tiles are in the top row?", ["2", "4", "6", "8"], "B"),
    ("Which corner is brightest?", ["top left", "top right", "bottom left", "bottom right"], "D"),
    ("What shape are the tiles?", ["circles", "squares", "triangles", "stars"], "B"),
    ("Does the gradient run left to right?", ["yes", "no", "both ways", "there is none"], "A"),
    ("Which colour are the tiles?", ["blue", "yellow", "black", "white"], "A"),
    ("Is the image wider than it is tall?", ["yes", "no", "square", "cannot tell"], "A"),
    ("How would you describe the pattern?", ["random", "checkered", "striped", "blank"], "B"),
    ("Which edge is darkest?", ["top", "bottom", "left", "right"], "C"),
    ("What could this image be used for?", ["a test card", "a portrait", "a map", "a receipt"], "A"),
]

with open("questions.jsonl", "w") as f:
    for n, (question, options, answer) in enumerate(QUESTIONS, 1):
        png(f"images/q-{n}.png", 256, 160, n)
        text = f"Question {n}: {question}\n" + "\n".join(f"({'ABCD'[k]}) {o}" for k, o in enumerate(options))
        text += "\nAnswer with the option's letter."
        messages = [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"images/q-{n}.png"}}, {"type": "text", "text": text}]},
            {"role": "assistant", "content": answer},
        ]
        f.write(json.dumps({"id": f"q{n}", "messages": messages}) + "\n")
