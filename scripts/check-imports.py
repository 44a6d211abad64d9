#!/usr/bin/env python3
"""The layout rules of src/, checked on every CI run:
- no import loop between files (a file names another through `crate::`, `super::`
  or a child `mod`-less path; loops make rooms that cannot be read alone);
- the supervisor (src/control/supervisor.rs) is sans-IO: no tokio, sockets or S3;
- no file over 600 lines, and main.rs (the command line only) at most 250."""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
SANS_IO = ["control/supervisor.rs", "control/supervisor_tests.rs"]
FORBIDDEN = re.compile(r"\b(tokio|std::net|aws_sdk_s3|ureq|S3Client)\b")


def module_of(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


files = {}
for root, _, names in os.walk(SRC):
    for n in names:
        if n.endswith(".rs"):
            rel = os.path.relpath(os.path.join(root, n), SRC)
            files[module_of(rel)] = rel
# Test files included by #[path] belong to their parent module.
files.pop(("control", "supervisor_tests"), None)


def resolve(path):
    """The longest module prefix of `path` that is a file."""
    for i in range(len(path), 0, -1):
        if tuple(path[:i]) in files:
            return tuple(path[:i])
    return None


edges = {m: set() for m in files}
problems = []
for mod, rel in files.items():
    text = open(os.path.join(SRC, rel), encoding="utf-8").read()
    # Code only: doc links and comments name modules without importing them.
    code = re.sub(r"//.*", "", text.split("#[cfg(test)]")[0])
    lines = text.count("\n")
    if lines > 600:
        problems.append(f"{rel}: {lines} lines (at most 600)")
    if rel == "main.rs" and lines > 250:
        problems.append(f"main.rs: {lines} lines (the command line only: at most 250)")
    # Paths in use lines and inline (crate::a::b, super::c::d), braces expanded one level.
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)(::\{([^}]*)\})?", code):
        head, rest = m.group(1), [p for p in m.group(2).split("::") if p]
        if head == "crate":
            path = rest
        else:
            path = list(mod[:-1]) + rest
        targets = [path]
        if m.group(4):
            for item in m.group(4).split(","):
                item = item.strip().split("::")[0].split(" ")[0]
                if item and item != "self":
                    targets.append(path + [item])
        for t in targets:
            r = resolve(t)
            if r and r != mod and r != mod[: len(r)]:
                edges[mod].add(r)
for rel in SANS_IO:
    p = os.path.join(SRC, rel)
    if os.path.exists(p):
        for i, line in enumerate(open(p, encoding="utf-8"), 1):
            if FORBIDDEN.search(line) and not line.strip().startswith("//"):
                problems.append(f"{rel}:{i}: the supervisor is sans-IO: {line.strip()}")

# Loops: depth-first search with colours.
colour = {m: 0 for m in edges}
stack = []


def visit(m):
    colour[m] = 1
    stack.append(m)
    for n in sorted(edges[m]):
        if colour[n] == 1:
            loop = stack[stack.index(n):] + [n]
            problems.append("import loop: " + " -> ".join(files[x] for x in loop))
        elif colour[n] == 0:
            visit(n)
    stack.pop()
    colour[m] = 2


for m in sorted(edges):
    if colour[m] == 0:
        visit(m)
for p in problems:
    print(f"check-imports: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check-imports: {len(files)} files, {sum(map(len, edges.values()))} imports, no loop")
