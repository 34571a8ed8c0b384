"""The `silkie` command. Thin: each subcommand parses its flags and calls one library function.

Heavy libraries (torch, transformers, datasets) are imported inside the commands that use them,
so `--help` and no-op reruns start instantly. Exit codes: 0 done, 2 bad usage or input, 1 failure.
"""

from __future__ import annotations

import argparse
import sys

from silkie import InputError


def world_make(args: argparse.Namespace) -> None:
    from silkie.world.make import write

    if args.n < 1:
        raise InputError("--n must be at least 1")
    path, added = write(args.out, n=args.n, seed=args.seed)
    print(f"{path}: {added} new mini-world instructions, {args.n - added} already there "
          f"(images in {path.parent / 'images'})")


def world_models(args: argparse.Namespace) -> None:
    from silkie.world.make import corpus
    from silkie.world.models import save_tiny_models

    for name, path in save_tiny_models(args.out, corpus(), seed=args.seed).items():
        print(f"wrote untrained {name} to {path}")


def validate(args: argparse.Namespace) -> int:
    from silkie.io import read_checked, record_kind

    kind = record_kind(args.path, args.kind)
    counts = {"ok": 0, "bad": 0}
    for _, record in read_checked(args.path, kind):
        if isinstance(record, Exception):
            counts["bad"] += 1
            print(f"error: {record}", file=sys.stderr)
        else:
            counts["ok"] += 1
    print(f"{args.path}: {counts['ok']} valid {kind} records, {counts['bad']} with errors")
    return 2 if counts["bad"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="silkie", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = commands.add_parser("world", help="the mini world: scenes, tasks and tiny models")
    world_commands = world.add_subparsers(dest="world_command", required=True, metavar="COMMAND")
    make = world_commands.add_parser("make", help="draw scenes and write instructions about them")
    make.add_argument("--n", type=int, default=200, help="number of instructions (default 200)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--out", required=True, help="run folder: writes instructions.jsonl and images/")
    make.set_defaults(func=world_make)
    models = world_commands.add_parser("models", help="write the untrained tiny Qwen2-VL and LLaVA")
    models.add_argument("--out", required=True, help="folder for tiny-qwen2-vl/ and tiny-llava/")
    models.add_argument("--seed", type=int, default=0)
    models.set_defaults(func=world_models)

    check = commands.add_parser("validate", help="check a stage's JSONL file record by record")
    check.add_argument("path", help="instructions.jsonl, completions.jsonl or annotations.jsonl")
    check.add_argument("--kind", choices=("instruction", "completion", "annotation"),
                       help="record type (default: from the file name)")
    check.set_defaults(func=validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (InputError, FileNotFoundError) as error:
        print(f"silkie: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("silkie: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
