#!/usr/bin/env python3
"""Static checks of the PowerShell scripts in this folder, runnable on Linux.

No PowerShell can be installed on the project's machines, so the scripts are checked with
tree-sitter-powershell (a grammar of PowerShell, not PowerShell's own parser) plus a few
checks for mistakes that grammar lets through. It proves that the files parse under that
grammar; it does not prove that Windows PowerShell would run them. See README.md.

    python3 -m venv /tmp/ps-venv
    /tmp/ps-venv/bin/pip install tree-sitter==0.26.1 tree-sitter-powershell==0.26.4
    /tmp/ps-venv/bin/python packaging/windows/check_ps1.py packaging/windows/*.ps1

Exit status 0 when every file passes, 1 otherwise.
"""
import re
import sys

import tree_sitter_powershell
from tree_sitter import Language, Parser

PARSER = Parser(Language(tree_sitter_powershell.language()))
SCOPES = {"env", "script", "global", "local", "private", "using", "variable", "function"}
PS7_ONLY = (("??", "null-coalescing is PowerShell 7"), ("?.", "null-conditional is PowerShell 7"),
            ("&&", "pipeline chains are PowerShell 7"), ("||", "pipeline chains are PowerShell 7"),
            ("-Parallel", "ForEach-Object -Parallel is PowerShell 7"), ("-AsHashtable", "PowerShell 6+"),
            ("-AsByteStream", "PowerShell 6+"), ("-AdditionalChildPath", "PowerShell 6+"))


def nodes(root):
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def check(path):
    problems = []
    raw = open(path, "rb").read()
    text = raw.decode("utf-8", "replace")
    tree = PARSER.parse(raw)

    # 1. The grammar: no ERROR or MISSING node anywhere.
    for node in nodes(tree.root_node):
        if node.is_error or node.is_missing:
            kind = "missing " + node.type if node.is_missing else "syntax error"
            problems.append((node.start_point[0] + 1, kind))
    if tree.root_node.has_error and not problems:
        problems.append((1, "syntax error (location unknown)"))

    # 2. A command argument starting with '+': "Cmd (a) + b" passes '+ b' as another argument.
    for node in nodes(tree.root_node):
        if node.type != "command":
            continue
        elements = node.child_by_field_name("command_elements")
        for child in (elements.children if elements else []):
            if child.type not in ("command_argument_sep", "command_parameter") and \
                    child.text.decode().lstrip().startswith("+"):
                problems.append((child.start_point[0] + 1, "argument starting with '+' (wrap the whole expression in parentheses)"))

    # 3. Line checks the grammar does not make.
    in_here = None
    for number, line in enumerate(text.split("\n"), 1):
        if any(ord(c) > 127 for c in line):
            problems.append((number, "non-ASCII character (Windows PowerShell 5.1 reads a file without BOM as ANSI)"))
        if in_here:
            if line.startswith(in_here + "@"):
                in_here = None
            elif line.lstrip().startswith(in_here + "@"):
                problems.append((number, "here-string terminator must start in column 1"))
            continue
        opener = re.search(r"@([\"'])\s*$", line)
        if opener and not line.lstrip().startswith("#"):
            in_here = opener.group(1)
            continue
        code = "" if line.lstrip().startswith("#") else line.split(" #")[0]
        for quoted in re.findall(r'"(?:[^"`]|`.)*"', code):
            for name in re.findall(r"\$([A-Za-z_]\w*):", quoted):
                if name.lower() not in SCOPES:
                    problems.append((number, f'"${name}:" in a double-quoted string is a parse error; write ${{{name}}}:'))
        if re.search(r"`[ \t]+$", line):
            problems.append((number, "backtick followed by spaces does not continue the line"))
        unquoted = re.sub(r"'[^']*'|\"(?:[^\"`]|`.)*\"", "", code)
        for token, why in PS7_ONLY:
            if token in unquoted:
                problems.append((number, why))
    if in_here:
        problems.append((len(text.split("\n")), "unterminated here-string"))

    # 4. Comment-based help before [CmdletBinding(SupportsShouldProcess...)] param(...), with a
    #    .PARAMETER for each parameter and none for a parameter that does not exist.
    blocks = [c for c in tree.root_node.children if c.type == "param_block"]
    if len(blocks) != 1:
        problems.append((1, f"expected one script param block, found {len(blocks)}"))
    else:
        block = blocks[0]
        names = []
        for node in nodes(block):
            if node.type == "script_parameter":
                variables = [c for c in node.children if c.type == "variable"]
                if variables:
                    names.append(variables[0].text.decode()[1:])
        head = text[:block.start_byte]
        help_block = re.search(r"<#(.*?)#>", head, re.S)
        if not help_block:
            problems.append((1, "no comment-based help before the param block"))
        else:
            body = help_block.group(1)
            for keyword in (".SYNOPSIS", ".DESCRIPTION", ".EXAMPLE"):
                if keyword not in body:
                    problems.append((1, f"help has no {keyword}"))
            documented = {d.lower() for d in re.findall(r"^\.PARAMETER\s+(\S+)", body, re.M)}
            declared = {n.lower() for n in names}
            for name in sorted(declared - documented):
                problems.append((1, f"parameter {name} has no .PARAMETER help"))
            for name in sorted(documented - declared):
                problems.append((1, f".PARAMETER {name} documents no parameter"))
            binding = (text[help_block.end():block.start_byte] + block.text.decode()).lstrip()
            if not binding.startswith("[CmdletBinding(") or "SupportsShouldProcess" not in binding.split("param", 1)[0]:
                problems.append((1, "the script's param block lacks [CmdletBinding(SupportsShouldProcess)]"))
    return problems


def main(paths):
    failed = 0
    for path in paths:
        problems = check(path)
        for line, message in sorted(problems):
            print(f"{path}:{line}: {message}")
        print(f"{path}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
