"""One fuzz target under atheris.

python -m tests.fuzz.atheris_main TARGET CORPUS [libFuzzer flags]
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["workers", "schemas"]):
    from tests.fuzz.targets import ALLOWED, TARGETS


def main() -> None:
    name, *flags = sys.argv[1:]
    target = TARGETS[name]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(ALLOWED):
            target(data)

    atheris.Setup([sys.argv[0], *flags], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
