"""`python -m operator_console.db.migrations`: write the next revision, or check none is due."""

from __future__ import annotations

import argparse
import sys

from operator_console.db.schema import differences_from_head, head_revision, new_revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m operator_console.db.migrations",
        description="Schema revisions of the console's database (see docs/database.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    revision = commands.add_parser(
        "revision", help="write the next revision from what the models gained"
    )
    revision.add_argument("message", help="what the revision changes, e.g. 'tickets get owner'")
    commands.add_parser("check", help="exit 1 if the models differ from the head revision")
    args = parser.parse_args(argv)
    if args.command == "revision":
        path = new_revision(args.message)
        print(f"wrote {path}; read it, then run: python -m operator_console.db.migrations check")
        return 0
    differences = differences_from_head()
    if differences:
        print(f"the models differ from revision {head_revision()}; write a revision:")
        for difference in differences:
            print(f"  {difference}")
        return 1
    print(f"the models and revision {head_revision()} agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
