#!/usr/bin/env python3
"""Every path the documentation names exists in the repository.

    tests/docs/check_paths.py [FILE.md ...]

By default the README, docs/*.md and the other folders' README.md files.

Checked in each Markdown file:
  - link targets, [text](target) and src="target", relative to the file,
    and their #anchors when the target is a Markdown file of the tree;
  - inline code spans that are repository paths: one word whose first
    component is a top-level entry of the tree (`fcgi-app/db.h`, `sql/`,
    `bench/*.sql`); a <placeholder> ends the part that is checked;
  - in the README also bare file names (`claim_sql.h`), which must exist
    somewhere in the tree.
Generated places (build/, .run/) and absolute paths are not the tree's.
Prints one line per dangling name and exits 1 if there is any.

Standard library only.
"""

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATED = {"build", ".run", ".git"}
BARE_EXT = (".c", ".h", ".py", ".sh", ".pml", ".sql", ".conf", ".mjs", ".md",
            ".lua", ".php", ".in")

LINK = re.compile(r"\]\(([^)\s]+)\)|\bsrc=\"([^\"]+)\"")
SPAN = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def slug(heading):
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose(lines):
    """The lines outside fenced and indented code blocks."""
    fenced = False
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    ") and not line.lstrip().startswith(("-", "|")) \
                and not re.match(r"\s*\d+\.", line):
            continue
        yield n, line


def anchors(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    found = set()
    for _, line in prose(lines):
        m = HEADING.match(line)
        if m:
            found.add(slug(m.group(1)))
    return found


def all_files():
    out = set()
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in GENERATED and
                   not (d == ROOT and x.startswith("."))
                   and x not in ("node_modules", "__pycache__")]
        out.update(files)
    return out


def exists(rel):
    """rel, a path of the tree (globs allowed, <placeholder> cuts it)."""
    cut = re.split(r"[<{$]", rel, maxsplit=1)[0]
    if cut != rel:
        cut = cut[:cut.rfind("/") + 1] if "/" in cut else ""
        if not cut:
            return True
    path = os.path.join(ROOT, cut)
    return bool(glob.glob(path)) if "*" in cut else os.path.exists(path)


def check(md, top, bare_names):
    problems = []
    here = os.path.dirname(md)
    with open(md, encoding="utf-8") as f:
        lines = f.read().splitlines()
    is_readme = os.path.abspath(md) == os.path.join(ROOT, "README.md")
    for n, line in prose(lines):
        where = "%s:%d" % (os.path.relpath(md, ROOT), n)
        for m in LINK.finditer(line):
            target = m.group(1) or m.group(2)
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(here, path)) if path else md
            if not os.path.exists(full):
                problems.append("%s: link to missing %s" % (where, target))
            elif anchor and full.endswith(".md") and anchor not in anchors(full):
                problems.append("%s: no heading #%s in %s"
                                % (where, anchor, os.path.relpath(full, ROOT)))
        for m in SPAN.finditer(line):
            word = m.group(1).strip().rstrip(".,:;")
            if not word or re.search(r"\s", word) or word.startswith(("/", "$", "-")):
                continue
            first = word.split("/", 1)[0]
            if first in top and ("/" in word or first == word):
                if not exists(word):
                    problems.append("%s: `%s` does not exist" % (where, word))
            elif is_readme and "/" not in word and word.endswith(BARE_EXT) \
                    and word not in bare_names:
                problems.append("%s: no file named `%s` in the tree" % (where, word))
    return problems


def main(argv):
    files = argv or [os.path.join(ROOT, "README.md")] + sorted(
        glob.glob(os.path.join(ROOT, "docs", "*.md"))
        + glob.glob(os.path.join(ROOT, "*", "**", "README.md"), recursive=True))
    files = [f for f in files if os.path.relpath(f, ROOT).split(os.sep)[0]
             not in GENERATED and "node_modules" not in f]
    top = {e for e in os.listdir(ROOT) if e not in GENERATED}
    bare_names = all_files()
    problems = []
    for md in files:
        problems += check(os.path.abspath(md), top, bare_names)
    for p in problems:
        print(p)
    print("check_paths: %d file(s), %s" % (
        len(files), "%d dangling name(s)" % len(problems) if problems else "every path exists"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
