#!/usr/bin/env python3
"""Write the fixtures of experiments/study_import.toml in the shape of the reference
study's per-run CSVs (Emericen/vlm-latency-bench, results/*_run_N.csv), with numbers and
answers of our own.

The shape is the study's: pandas' `to_csv` without an index, so RFC 4180 quoting
(fields holding a comma, a double quote or a newline are quoted, quotes doubled), LF
line ends, a final newline, no byte-order mark; full-precision float seconds; the
columns `times_to_first_token,times_to_completion,assistant_responses`, or
`times_to_completion,assistant_responses` for runs that did not record a time to first
token. Python's csv module writes exactly that. Deterministic: run it again and nothing
changes.

    python3 scripts/study/fixtures.py
"""

import csv
import pathlib
import random

OUT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "study"
TURNS = 60

# Answers as models write them: Markdown, lists, commas, quoted words, several lines.
ANSWERS = [
    "The image shows a city street at dusk, with cars, a tram and a few pedestrians.",
    "### Key Elements\n\n1. **Sky**: orange and purple, the sun just below the horizon\n2. **Street**: wet, reflecting the lights\n3. A sign that reads \"OPEN\"",
    "This is a slide titled \"Quarterly Results\", with a bar chart of four quarters; Q3 is the highest.",
    "It appears to be a screenshot of a code editor.\n\n- left: a file tree\n- right: a Rust file, `main.rs`\n\nThe theme is dark.",
    "A bowl of fruit: apples, two bananas and a pear, on a wooden table.",
    "The text is a short story about a lighthouse keeper, told in the first person, calm and reflective in tone.",
    "The main topic is the history of the printing press, and how it changed who could read.",
    "**Summary:** the passage argues that small, repeated habits matter more than \"big\" decisions.",
]


def write(name, rows, ttft):
    header = (["times_to_first_token"] if ttft else []) + ["times_to_completion", "assistant_responses"]
    with open(OUT / name, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for first, total, answer in rows:
            w.writerow(([repr(first)] if ttft else []) + [repr(total), answer])


def run(seed, ttft_base, ttft_growth, decode, jitter, text_only=False):
    """One conversation of TURNS turns: the time to first token grows with the history
    resent each turn; decoding adds a roughly constant time."""
    rng = random.Random(seed)
    rows = []
    for t in range(TURNS):
        first = ttft_base + ttft_growth * t * (1 + jitter * (rng.random() - 0.5))
        total = first + decode * (1 + jitter * (rng.random() - 0.5))
        answer = ANSWERS[5 + rng.randrange(3)] if text_only else ANSWERS[rng.randrange(5)]
        # Full precision, as time.time() differences are.
        rows.append((first + rng.random() * 1e-9, total + rng.random() * 1e-9, answer))
    return rows


def main():
    for run_n, seed in [(1, 1337), (2, 66), (3, 88)]:
        write(f"qwen2.5-vl-32b_run_{run_n}.csv", run(seed, 0.21, 0.0042, 0.86, 0.12), ttft=True)
        write(f"claude-sonnet_run_{run_n}.csv", run(seed + 1, 1.18, 0.0011, 0.55, 0.10), ttft=True)
    # A text-only model with one run (one seed), recorded without a time to first token.
    write("qwen2.5-vl-7b-text-only_run_1.csv", run(7, 0.09, 0.0035, 0.31, 0.15, text_only=True), ttft=False)


if __name__ == "__main__":
    main()
