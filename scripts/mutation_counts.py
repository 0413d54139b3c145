"""Mutation testing's verdicts per module, from mutmut's result files (make mutation; docs/development.md).

    python scripts/mutation_counts.py [mutants]

Prints one markdown row per mutated module: killed, survived, no tests, timeout, other, not checked.
Equivalent mutants (the same behaviour) are listed by name in docs/development.md, not here."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

COLUMNS = ["killed", "survived", "no tests", "timeout", "not checked"]


def counts(root: Path) -> dict[str, collections.Counter]:
    """{module path: Counter of verdicts} for every ``<module>.py.meta`` below ``root``."""
    table = {}
    for meta in sorted(root.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        verdicts = collections.Counter(status_by_exit_code.get(code, f"exit {code}") for code in codes.values())
        if verdicts:
            table[str(meta.relative_to(root)).removesuffix(".meta")] = verdicts
    return table


def main(root: str = "mutants") -> None:
    table = counts(Path(root))
    if not table:
        sys.exit(f"mutation_counts: no mutmut results below {root} (run `make mutation` first)")
    print("| module | " + " | ".join(COLUMNS) + " | other | total |")
    print("|---|" + "---|" * (len(COLUMNS) + 2))
    total = collections.Counter()
    for module, verdicts in [*table.items(), ("all", None)]:
        verdicts = total if verdicts is None else verdicts
        other = sum(n for status, n in verdicts.items() if status not in COLUMNS)
        print(f"| {module} | " + " | ".join(str(verdicts[c]) for c in COLUMNS) + f" | {other} | {verdicts.total()} |")
        if module != "all":
            total.update(verdicts)


if __name__ == "__main__":
    main(*sys.argv[1:])
