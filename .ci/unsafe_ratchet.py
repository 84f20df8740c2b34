#!/usr/bin/env python3
"""Unsafe ratchet: the number of `unsafe` uses per Rust file may only go down.

Counts every `unsafe` keyword (blocks, fns, impls, `unsafe extern "C" fn`) outside the
trailing `#[cfg(test)]` module of each file under rust/*/src and rust/*/examples, and
compares with .ci/unsafe-baseline.txt. A file above its baseline (or a new file with any)
fails; a file below it asks for the baseline to be lowered. `--update` rewrites the
baseline.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".ci" / "unsafe-baseline.txt"
WORD = re.compile(r"\bunsafe\b")


def count(path: Path) -> int:
    text = path.read_text()
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut != -1:
        text = text[:cut]
    code = "\n".join(line.split("//", 1)[0] for line in text.splitlines())
    return len(WORD.findall(code))


def current() -> dict[str, int]:
    counts = {}
    paths = [*ROOT.glob("rust/*/src/**/*.rs"), *ROOT.glob("rust/*/examples/**/*.rs")]
    for path in sorted(paths):
        n = count(path)
        if n:
            counts[str(path.relative_to(ROOT))] = n
    return counts


def main() -> int:
    now = current()
    if "--update" in sys.argv:
        BASELINE.write_text("".join(f"{n} {p}\n" for p, n in now.items()))
        print(f"unsafe baseline updated: {sum(now.values())} uses in {len(now)} files")
        return 0
    base = {}
    for line in BASELINE.read_text().splitlines():
        n, p = line.split(maxsplit=1)
        base[p] = int(n)
    failed = False
    for path, n in now.items():
        allowed = base.get(path, 0)
        if n > allowed:
            print(f"unsafe ratchet: {path} has {n} uses of unsafe, baseline {allowed}")
            failed = True
        elif n < allowed:
            print(f"unsafe ratchet: {path} went down to {n} (baseline {allowed}); "
                  "run .ci/unsafe_ratchet.py --update")
    core = [p for p in now if p.startswith("rust/core/")]
    if core:
        print(f"unsafe ratchet: the safe core must not use unsafe: {core}")
        failed = True
    print(f"unsafe ratchet: {sum(now.values())} uses in {len(now)} files")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
