#!/usr/bin/env python3
"""Lists C++ function bodies longer than a limit (default 100 lines) in the given trees.

A function is a top-level (namespace-scope or class-member) brace block whose opening line
looks like a function head: it ends in ')' plus qualifiers before '{', and is not a
control statement, a lambda, or an initializer. Good enough for this codebase's style
(one definition per head, braces at line ends). Exit status 1 when any is found.

Usage: long_functions.py [--limit N] DIR...
"""
import argparse
import os
import re
import sys

HEAD = re.compile(r"\)\s*(const)?\s*(noexcept)?\s*(override)?\s*(->\s*[\w:<>,\s*&]+)?\s*\{\s*$")
NOT_FUNCTION = re.compile(r"^\s*(if|for|while|switch|catch|else|do|return|case)\b|\[[^\]]*\]\s*\(|=\s*\[")


def functions(path):
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n")
    out, depth, start, name = [], 0, None, None
    for i, line in enumerate(lines):
        code = re.sub(r'"(\\.|[^"\\])*"', '""', line.split("//")[0])
        if start is None and HEAD.search(code) and not NOT_FUNCTION.search(code):
            # namespace or class scope: depth counts only namespace/class braces here
            head = code.strip()
            j = i
            while "(" not in head and j > 0:  # the head may start on an earlier line
                j -= 1
                head = lines[j].strip() + " " + head
            m = re.search(r"([\w:~<>=!+\-*/\[\]]+)\s*\(", head)
            if m and not head.startswith(("namespace", "class", "struct", "enum", "union")):
                start, name, base = i, m.group(1), depth
        depth += code.count("{") - code.count("}")
        if start is not None and depth <= base:
            out.append((name, start + 1, i - start + 1))
            start = None
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    found = []
    for d in a.dirs:
        for root, _, files in os.walk(d):
            for f in files:
                if f.endswith((".cpp", ".hpp")):
                    p = os.path.join(root, f)
                    found += [(n, p, line, length) for n, line, length in functions(p) if length > a.limit]
    for n, p, line, length in sorted(found, key=lambda x: -x[3]):
        print(f"{length:5d} lines  {p}:{line}  {n}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
