"""``gpu-stress schema``: print the JSON Schema of scenario files (for editors' YAML validation)."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of scenario files")
    p.set_defaults(func=schema_command)


def schema_command(args: argparse.Namespace) -> int:  # noqa: ARG001
    from stress.scenario import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0
