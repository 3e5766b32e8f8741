"""``fspo-verl``: the command-line entry point.

Each subcommand lives in its own module and is imported only when called, so ``fspo-verl doctor`` works
even when a heavier component is broken. Each entry names ``module:function``, a function taking the
remaining arguments (``argv: list[str]``) and returning the exit status.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("fspo_verl.cli.app:train_main", "the Hydra application: presets + overrides, sweeps (-m), launchers; checks, then verl's V1 trainer"),
    "validate": ("fspo_verl.cli.validate:validate_main", "compose and check only; print the resolved config or every problem"),
    "list": ("fspo_verl.cli.validate:list_main", "the presets of each config group and the registered names"),
    "doctor": ("fspo_verl.cli.doctor:main", "check that a bare `import verl` registers every fspo_verl name and has every verl internal we use; --gpu: also this node's GPU"),
    "fairness": ("fspo_verl.analysis.fairness_cli:main", "clip rate per response-length bin (simulate) and FSPO constants (calibrate)"),
    "plot": ("fspo_verl.analysis.plotting:main", "PNGs of a run (its JSONL or directory), or one figure per metric comparing a sweep's jobs"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fspo-verl <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] in ("-sc", "--shell-completion"):  # Hydra's completion script calls the program itself
        args = ["train", *args]
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"fspo-verl: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function = COMMANDS[command][0].split(":")
    return int(getattr(importlib.import_module(module_name), function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
