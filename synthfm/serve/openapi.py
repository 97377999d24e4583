"""Write the worker's OpenAPI document: ``python -m synthfm.serve.openapi [docs/serve_openapi.json]``.

Testing/core/test_serve.py checks that the committed file matches the code.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def document() -> str:
    from synthfm.serve.app import openapi_schema

    return json.dumps(openapi_schema(), indent=1, sort_keys=True) + "\n"


def main(argv=None) -> int:
    from synthfm.io import atomic_write_text

    argv = sys.argv[1:] if argv is None else argv
    target = Path(argv[0] if argv else Path(__file__).resolve().parents[2] / "docs" / "serve_openapi.json")
    atomic_write_text(target, document())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
