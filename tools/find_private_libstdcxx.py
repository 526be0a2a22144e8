"""List the shared objects loaded in this process that carry a private copy of libstdc++.

Two copies of libstdc++ in one process (the shared libstdc++.so.6 that torch uses and a static copy
linked into some other extension with -static-libstdc++) disagree about locale facets; the symptom is
a crash inside std::ostream (every c10::str / TORCH_CHECK message) that looks like a bug in whichever
library happens to format a number first. Run it after importing what the failing process imports:

    python tools/find_private_libstdcxx.py [--ignore-import-errors] [module ...]

Exits 1 when such an object is found. Needs `nm` (binutils).
"""
from __future__ import annotations

import importlib
import subprocess
import sys

# Defined by libstdc++ itself; an object that defines (not merely uses) them carries its own copy.
MARKERS = ("_ZNSt6locale7classicEv", "_ZNSt8ios_base4InitC1Ev", "_ZNKSt7codecvtIcc11__mbstate_tE6do_outERS0_PKcS4_RS4_PcS6_RS6_")


def loaded_objects() -> list[str]:
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and ".so" in parts[5]:
                paths.add(parts[5])
    return sorted(paths)


def defines_libstdcxx(path: str) -> list[str]:
    if "libstdc++.so" in path:
        return []
    found = []
    for flag in ("-D", ""):
        try:
            out = subprocess.run(["nm", "--defined-only", *([flag] if flag else []), path],
                                 capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        found += [m for m in MARKERS if m in out]
    return sorted(set(found))


def main(args: list[str]) -> int:
    ignore_errors = "--ignore-import-errors" in args
    for name in (a for a in args if not a.startswith("--")):
        try:
            importlib.import_module(name)
        except Exception as exc:  # a plugin that does not import is not what we are looking for
            if not ignore_errors:
                raise
            print(f"could not import {name}: {exc}")
    bad = 0
    for path in loaded_objects():
        markers = defines_libstdcxx(path)
        if markers:
            bad += 1
            print(f"private libstdc++ in {path}: defines {', '.join(markers)}")
    print(f"{len(loaded_objects())} shared objects loaded, {bad} with a private libstdc++")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
