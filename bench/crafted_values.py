"""Sigma values against event text built to make matching slow, side by side with how they were matched before.

Wildcard values with two or more `*` (`*\\*.exe`, `*cmd*/c*`): the backtracking regex they were compiled to against
the literal segments found in order (`compiler._glob_check`), on ordinary and crafted values. `|re` patterns that
repeat something ambiguous without bound (SigmaHQ's Invoke-Obfuscation VAR launcher): Python's `re` against the
guarded search (`regexes.search_test`: the `regex` module within a time budget). Both sides must give the same
answer wherever both answer.

    .venv/bin/python bench/crafted_values.py [--sizes 1000 10000 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

from custodes.detections.sigma.compiler import _glob_check
from custodes.detections.sigma.regexes import search_test

LAUNCHER = r'cmd.{0,5}(?:/c|/r)(?:\s|)"set\s[a-zA-Z]{3,6}.*(?:\{\d\}){1,}\\"\s+?-f(?:.*\)){1,}.*"'
"""SigmaHQ's Invoke-Obfuscation VAR launcher pattern (`proc_creation_win_hktl_invoke_obfuscation_var.yml`)."""
RE_LIMIT = 22
"""The longest crafted tail `re` is given: each two more `)` take it four times as long."""
PATTERNS = [["", "\\", ".exe"], ["", "cmd", "/c", ""], ["", "\\appdata\\", "\\temp\\", ".ps1"]]
"""Lower-cased literal segments around the `*`s of three SigmaHQ-like values."""


def crafted(pattern: list[str], size: int) -> str:
    """A value built to fail late: the first inner segment repeated, the last never present."""
    seed = next(segment for segment in pattern[1:] if segment)
    return (seed * (size // len(seed) + 1))[:size]


def ordinary(size: int) -> str:
    """A plausible, matching path of about `size` characters."""
    return ("c:\\users\\jdoe\\appdata\\local\\temp\\" + "x" * size)[:size] + "\\run.exe"


def regex_check(pattern: list[str]) -> Callable[[str], bool]:
    """The check as it was: one regex, `.*` for each `*`, matched whole."""
    regex = re.compile(".*".join(map(re.escape, pattern)), re.DOTALL)
    return lambda text: regex.fullmatch(text) is not None


def timed(check: Callable[[str], bool], value: str, repeat: int) -> tuple[float, bool]:
    best, answer = float("inf"), False
    for _ in range(repeat):
        started = time.perf_counter()
        answer = check(value)
        best = min(best, time.perf_counter() - started)
    return best, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'pattern':<24} {'value':<9} {'chars':>7} {'regex us':>12} {'segments us':>12} {'ratio':>9}")
    for pattern in PATTERNS:
        regex, glob = regex_check(pattern), _glob_check([pattern])
        for kind in ("ordinary", "crafted"):
            for size in args.sizes:
                value = ordinary(size) if kind == "ordinary" else crafted(pattern, size)
                old, expected = timed(regex, value, args.repeat)
                new, answer = timed(glob, value, args.repeat)
                assert answer is expected, (pattern, kind, size)
                name = "*".join(pattern)
                ratio = old / max(new, 1e-9)
                print(f"{name:<24} {kind:<9} {size:>7} {old * 1e6:>12.1f} {new * 1e6:>12.1f} {ratio:>8.1f}x")
    launcher_rows(args.repeat)


def launcher_rows(repeat: int) -> None:
    """The launcher pattern on a command line ending in more and more `)` and no closing quote."""
    plain = re.compile(LAUNCHER)
    guarded = search_test(LAUNCHER, 0)
    print(f"\n{'|re pattern':<24} {'trailing )':>10} {'re us':>14} {'guarded us':>12}")
    for tail in (14, 18, RE_LIMIT, 60, 1000, 10000):
        value = 'cmd /c "set abcd {0}\\" -f' + ")" * tail
        new, answer = timed(guarded, value, repeat)
        if tail <= RE_LIMIT:
            old, expected = timed(lambda text: plain.search(text) is not None, value, 1)
            assert answer is expected, tail
            before = f"{old * 1e6:>14.1f}"
        else:
            before = f"{'(not run)':>14}"
        verdict = "" if tail <= RE_LIMIT or not answer else "  past the budget: counted as a match"
        print(f"{'Invoke-Obfuscation VAR':<24} {tail:>10} {before} {new * 1e6:>12.1f}{verdict}")


if __name__ == "__main__":
    main()
