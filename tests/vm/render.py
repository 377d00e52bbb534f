#!/usr/bin/env python3
"""Render a Terraform templatefile() template with plain string variables.

Usage: render.py TEMPLATE name=value name=@file ...   (prints the result)

Supports what the project's templates use: ${name} interpolation, and the escapes $${ and %%{.
Anything else (a function call, a %{ directive) or a variable without a value is an error, so the
test never boots a VM with a half-rendered template.
"""
import re
import sys


def main():
    path, args = sys.argv[1], sys.argv[2:]
    values = {}
    for a in args:
        name, _, value = a.partition("=")
        if value.startswith("@"):
            with open(value[1:]) as f:
                value = f.read()
        values[name] = value
    text = open(path).read()
    used = set()
    out = []
    pos = 0
    token = re.compile(r"\$\$\{|%%\{|\$\{([^}]*)\}|%\{")
    for m in token.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        t = m.group(0)
        if t == "$${":
            out.append("${")
        elif t == "%%{":
            out.append("%{")
        elif t == "%{":
            sys.exit(f"render.py: {path}: template directive %{{ not supported")
        else:
            name = m.group(1).strip()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                sys.exit(f"render.py: {path}: expression ${{{name}}} not supported")
            if name not in values:
                sys.exit(f"render.py: {path}: no value for variable {name}")
            used.add(name)
            out.append(values[name])
    out.append(text[pos:])
    unused = set(values) - used
    if unused:
        sys.exit(f"render.py: {path}: variables given but not in the template: {sorted(unused)}")
    sys.stdout.write("".join(out))


main()
