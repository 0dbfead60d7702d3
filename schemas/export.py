"""Write (or check) the JSON Schema files of the output events.

``python -m schemas.export docs/schemas`` writes them; with ``--check`` it
exits 1 when the checked-in files differ from the models (CI runs this).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.events import json_schemas, write_json_schemas


def stale_files(folder: Path) -> list[str]:
    """Names of schema files in ``folder`` that are missing or out of date."""
    stale = []
    for name, schema in json_schemas().items():
        path = folder / name
        expected = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        if not path.exists() or path.read_text() != expected:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--check", action="store_true", help="fail when files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.folder)
        if stale:
            print(f"stale JSON schemas: {', '.join(stale)}; run `make schemas`", file=sys.stderr)
            return 1
        return 0
    for path in write_json_schemas(args.folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
