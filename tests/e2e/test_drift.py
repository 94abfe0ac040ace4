#!/usr/bin/env python3
"""The documentation has not drifted from the program.

The truth is what the built qimg prints:
- every subcommand listed by `qimg --help` has a README section (`### cmd`),
  a man page section (`.SS cmd` in man/qimg.1), and is offered by each
  completion script (bash, zsh, fish);
- every option that `qimg CMD --help` prints appears in CMD's man page
  section and in CMD's part of each completion script;
- the global options of `qimg --help` appear in the man page and the
  completions' top level.
`-h/--help` is left out per command: CLI11 adds it everywhere and the man
page documents it once under GLOBAL OPTIONS.

Usage: test_drift.py --qimg PATH
"""

from __future__ import annotations

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
MAN = os.path.join(SOURCE_DIR, "man", "qimg.1")
README = os.path.join(SOURCE_DIR, "README.md")
BASH = os.path.join(SOURCE_DIR, "completions", "qimg.bash")
ZSH = os.path.join(SOURCE_DIR, "completions", "_qimg")
FISH = os.path.join(SOURCE_DIR, "completions", "qimg.fish")
HELP_OPTIONS = {"-h", "--help"}

sys.path.insert(0, os.path.join(HERE, "..", "support"))
import qimgtest  # noqa: E402


def qimg_help(qimg: str, *argv: str) -> str:
    p = qimgtest.run([qimg, *argv, "--help"], text=True, timeout=20)
    if p.returncode != 0:
        raise SystemExit(f"FAIL: `qimg {' '.join(argv)} --help` exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def help_sections(text: str) -> dict[str, list[str]]:
    """CLI11 help: 'Options:' / 'Subcommands:' headings, then indented entries."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Za-z ]*:$", line):
            current = line[:-1]
            sections[current] = []
        elif current and line.startswith("  ") and line.strip():
            sections[current].append(line.strip())
        elif not line.strip():
            current = None
    return sections


def help_options(text: str) -> set[str]:
    """Option names of CLI11 help entries ("-t,--cache TEXT   Cache mode" -> -t, --cache)."""
    names = set()
    for entry in help_sections(text).get("Options", []):
        spec = entry.split()[0]
        names.update(n for n in spec.split(",") if n.startswith("-"))
    return names - HELP_OPTIONS


def help_subcommands(text: str) -> list[str]:
    return [entry.split()[0] for entry in help_sections(text).get("Subcommands", [])]


def has_option(text: str, name: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", text) is not None


# --- man page ---------------------------------------------------------------

def man_text() -> str:
    return open(MAN).read().replace("\\-", "-")


def man_section(text: str, cmd: str) -> str | None:
    m = re.search(r"^\.SS " + re.escape(cmd) + r"\s*$(.*?)(?=^\.S[SH] )", text, re.M | re.S)
    return m.group(1) if m else None


def man_global(text: str) -> str:
    m = re.search(r"^\.SH GLOBAL OPTIONS\s*$(.*?)(?=^\.S[SH] )", text, re.M | re.S)
    return m.group(1) if m else ""


# --- completions ------------------------------------------------------------

def bash_commands(text: str) -> set[str]:
    m = re.search(r'local commands="([^"]*)"', text)
    return set(m.group(1).split()) if m else set()


def bash_section(text: str, cmd: str) -> str | None:
    m = re.search(r"^\s*" + re.escape(cmd) + r'\)\s*opts="([^"]*)"', text, re.M)
    return m.group(1) if m else None


def bash_global(text: str) -> str:
    m = re.search(r'compgen -W "\$commands([^"]*)"', text)
    return m.group(1) if m else ""


def zsh_commands(text: str) -> set[str]:
    m = re.search(r"'1:command:\(\((.*?)\)\)'", text)
    return set(re.findall(r"([\w-]+)\\:", m.group(1))) if m else set()


def zsh_section(text: str, cmd: str) -> str | None:
    m = re.search(r"^\s*" + re.escape(cmd) + r"\)\s*$(.*?);;", text, re.M | re.S)
    return m.group(1) if m else None


def zsh_global(text: str) -> str:
    m = re.search(r"_arguments -C(.*?)'1:command:", text, re.S)
    return m.group(1) if m else ""


def fish_commands(text: str) -> set[str]:
    m = re.search(r"^set -l cmds (.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


def fish_options(lines: list[str]) -> str:
    names = []
    for line in lines:
        names += ["-" + s for s in re.findall(r"\s-s (\S+)", line)]
        names += ["--" + s for s in re.findall(r"\s-l (\S+)", line)]
    return " ".join(names)


def fish_section(text: str, cmd: str) -> str | None:
    lines = [l for l in text.splitlines() if f"__fish_seen_subcommand_from {cmd}'" in l]
    return fish_options(lines) if lines else None


def fish_global(text: str) -> str:
    return fish_options([l for l in text.splitlines() if "not __fish_seen_subcommand_from" in l])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    q = os.path.abspath(ap.parse_args().qimg)
    problems: list[str] = []

    top = qimg_help(q)
    commands = help_subcommands(top)
    if not commands:
        print("FAIL: `qimg --help` lists no subcommands")
        return 1
    global_options = help_options(top)
    options = {cmd: help_options(qimg_help(q, cmd)) for cmd in commands}
    print(f"commands: {' '.join(commands)}; global options: {' '.join(sorted(global_options))}")

    man = man_text()
    readme = open(README).read()
    scripts = {
        "completions/qimg.bash": (open(BASH).read(), bash_commands, bash_section, bash_global),
        "completions/_qimg": (open(ZSH).read(), zsh_commands, zsh_section, zsh_global),
        "completions/qimg.fish": (open(FISH).read(), fish_commands, fish_section, fish_global),
    }

    # Global options.
    for name in sorted(global_options | HELP_OPTIONS):
        if not has_option(man_global(man), name):
            problems.append(f"man/qimg.1: GLOBAL OPTIONS does not describe {name}")
    for path, (text, _, _, global_part) in scripts.items():
        for name in sorted(global_options):
            if not has_option(global_part(text), name):
                problems.append(f"{path}: top level does not offer {name}")

    for cmd in commands:
        # README and man page sections.
        heading = re.search(r"^### " + re.escape(cmd) + r"\b(.*)$", readme, re.M)
        if not heading:
            problems.append(f"README.md: no `### {cmd}` section")
        elif "coming" in heading.group(1):
            problems.append(f"README.md: `### {cmd}` still says{heading.group(1)}, but the command exists")
        section = man_section(man, cmd)
        if section is None:
            problems.append(f"man/qimg.1: no `.SS {cmd}` section")
        else:
            for name in sorted(options[cmd]):
                if not has_option(section, name):
                    problems.append(f"man/qimg.1: section {cmd} does not describe {name}")
        # Completions.
        for path, (text, command_list, command_part, _) in scripts.items():
            if cmd not in command_list(text):
                problems.append(f"{path}: {cmd} is not among the completed commands")
            part = command_part(text, cmd)
            if part is None:
                problems.append(f"{path}: no completions for {cmd}'s options")
                continue
            for name in sorted(options[cmd]):
                if not has_option(part, name):
                    problems.append(f"{path}: {cmd} does not complete {name}")
        print(f"[checked] {cmd}: {' '.join(sorted(options[cmd]))}")

    # Commands documented or completed that qimg does not have.
    for path, (text, command_list, _, _) in scripts.items():
        for extra in sorted(command_list(text) - set(commands)):
            problems.append(f"{path}: completes {extra}, which `qimg --help` does not list")
    for extra in sorted(set(re.findall(r"^\.SS (\S+)\s*$", man, re.M)) - set(commands)):
        problems.append(f"man/qimg.1: section {extra}, which `qimg --help` does not list")

    return qimgtest.report(problems, "\nman page, completions and README match `qimg --help`", "drift problem(s)")


if __name__ == "__main__":
    sys.exit(main())
