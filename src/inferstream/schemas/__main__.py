"""``python -m inferstream.schemas [DIR]``: write the JSON Schema files of every contract."""

from __future__ import annotations

import sys
from pathlib import Path

from inferstream.schemas.jsonschema import PACKAGE_DIR, export

if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE_DIR
    for path in export(target):
        print(path)
