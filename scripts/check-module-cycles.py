#!/usr/bin/env python3
"""Checks that no two source files of a crate import each other, directly or around a loop.

For every crate under crates/ (or the crate directories given as arguments), the module
tree is built from `mod` declarations, starting at src/lib.rs and src/main.rs (each a
crate of its own). An edge A -> B means file A names module B in a path: a `use`
(`use crate::x::Y`, `use super::{a, b}`, `pub use child::Z`) or a qualified path in
code (`crate::x::f()`, `super::g`, `child::h`). A path names the deepest module it
reaches; an item re-exported by a parent module counts as the parent's. A bare `mod`
declaration is not an edge (it only places the child), so a child reaching up with
`super::` is fine as long as the parent does not also reach down into that child.

Prints every strongly connected component of more than one file and exits 1 if there
is one; exits 0 when every crate's file graph is a DAG. Standard library only.
"""

import os
import re
import sys
from collections import deque

IDENT = r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """Blanks out comments, string, byte-string and char literals, keeping newlines."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'b?r#*"', text[i:i + 260]) and (i == 0 or not re.match(r"\w", text[i - 1])):
            m = re.match(r'b?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i) and (i == 0 or not re.match(r"\w", text[i - 1]))):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), not a lifetime ('a).
            m = re.match(r"'(?:\\(?:u\{[0-9A-Fa-f]+\}|x[0-9A-Fa-f]{2}|.)|[^\\'])'", text[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d, e}, f as g}` -> [[a, b], [a, c, d], [a, c, e], [a, f]]."""
    tree = re.sub(r"\s+", "", tree)
    tree = re.sub(r"^::", "", tree)

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        return parts

    def expand(s):
        brace = s.find("{")
        if brace < 0:
            return [[seg for seg in s.split("::") if seg]]
        prefix = [seg for seg in s[:brace].split("::") if seg]
        inner = s[brace + 1:s.rindex("}")]
        paths = []
        for part in split_top(inner):
            for p in expand(part):
                paths.append(prefix + p)
        if not split_top(inner):
            paths.append(prefix)
        return paths

    return expand(tree)


def strip_alias(tree):
    """Removes `as name` renames from a use tree (before whitespace is squeezed)."""
    return re.sub(r"\s+as\s+" + IDENT, "", tree)


class Crate:
    def __init__(self, name, root_file):
        self.name = name
        self.modules = {}  # module path tuple -> file
        self.children = {}  # module path tuple -> set of child names
        self.add_module((), root_file)

    def add_module(self, path, file):
        if path in self.modules:
            return
        self.modules[path] = file
        self.children.setdefault(path, set())
        text = strip_comments_and_strings(open(file, encoding="utf-8").read())
        for mod_path, name, inline in find_mod_decls(text, path):
            self.children.setdefault(mod_path, set()).add(name)
            child = mod_path + (name,)
            if inline:
                self.modules.setdefault(child, file)
                self.children.setdefault(child, set())
                continue
            child_file = locate_child(file, path, mod_path, name)
            if child_file:
                self.add_module(child, child_file)


def module_dir(file, path):
    """Directory holding the files of the children of the file-module `path` in `file`."""
    base = os.path.basename(file)
    d = os.path.dirname(file)
    if not path or base in ("mod.rs", "lib.rs", "main.rs"):
        return d
    return os.path.join(d, os.path.splitext(base)[0])


def locate_child(file, file_mod_path, mod_path, name):
    d = module_dir(file, file_mod_path)
    # Inline modules nest their children's files in a directory of their own name.
    for inline in mod_path[len(file_mod_path):]:
        d = os.path.join(d, inline)
    for candidate in (os.path.join(d, name + ".rs"), os.path.join(d, name, "mod.rs")):
        if os.path.isfile(candidate):
            return candidate
    return None


def scopes(text, file_mod_path):
    """Yields (start, end, module path) for the file and each inline module in it."""
    result = [(0, len(text), file_mod_path)]
    stack = []  # (module path, depth at which it opened)
    depth = 0
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{|[{}]", text):
        tok = m.group(0)
        if tok.startswith("mod"):
            current = stack[-1][0] if stack else file_mod_path
            depth += 1
            stack.append((current + (m.group(1).replace("r#", ""),), depth, m.start()))
        elif tok == "{":
            depth += 1
        else:
            if stack and stack[-1][1] == depth:
                path, _, start = stack.pop()
                result.append((start, m.end(), path))
            depth -= 1
    return result


def module_at(scope_list, pos):
    best = None
    for start, end, path in scope_list:
        if start <= pos < end and (best is None or len(path) > len(best)):
            best = path
    return best


def find_mod_decls(text, file_mod_path):
    found = []
    scope_list = scopes(text, file_mod_path)
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*([;{])", text):
        at = module_at(scope_list, m.start())
        # The `mod x {` itself opens scope x; its declaration belongs to the parent.
        if m.group(2) == "{" and at and at[-1] == m.group(1).replace("r#", ""):
            at = at[:-1]
        found.append((at, m.group(1).replace("r#", ""), m.group(2) == "{"))
    return found


def resolve(crate, current, segments):
    """The deepest module a path starting in module `current` names, or None."""
    if not segments:
        return None
    first = segments[0]
    if first == "crate":
        base, rest = (), segments[1:]
    elif first in ("super", "self"):
        base, rest = current, segments
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                if not base:
                    return None
                base = base[:-1]
            rest = rest[1:]
    elif first in crate.children.get(current, ()):
        base, rest = current, segments
    else:
        return None
    path = base
    for seg in rest:
        seg = seg.replace("r#", "")
        if path + (seg,) in crate.modules:
            path = path + (seg,)
        else:
            break
    return path


def edges_of(crate):
    """file -> {file it imports: (line, path) of the first place it does}."""
    edges = {}
    done = set()
    for mod_path, file in sorted(crate.modules.items()):
        if file in done:
            continue
        done.add(file)
        file_mod_path = min((p for p, f in crate.modules.items() if f == file), key=len)
        text = strip_comments_and_strings(open(file, encoding="utf-8").read())
        scope_list = scopes(text, file_mod_path)
        targets = edges.setdefault(file, {})

        def add(target, pos, shown):
            to = crate.modules[target]
            if to != file and to not in targets:
                targets[to] = (text.count("\n", 0, pos) + 1, shown)

        use_spans = []
        for m in re.finditer(r"\buse\s+([^;]*);", text):
            use_spans.append((m.start(), m.end()))
            current = module_at(scope_list, m.start())
            for segs in expand_use_tree(strip_alias(m.group(1))):
                target = resolve(crate, current, segs)
                if target is not None:
                    add(target, m.start(), "use " + "::".join(segs))
        for m in re.finditer(r"(?<![\w:])(" + IDENT + r")(\s*::\s*" + IDENT + r")+", text):
            if any(s <= m.start() < e for s, e in use_spans):
                continue
            current = module_at(scope_list, m.start())
            segs = [s.strip() for s in m.group(0).split("::")]
            target = resolve(crate, current, segs)
            if target is not None:
                add(target, m.start(), "::".join(segs))
    return edges


def cycles(edges):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def example_loop(edges, component):
    """One concrete loop through the component, for the report."""
    members = set(component)
    start = component[0]
    # Breadth-first search back to `start` within the component.
    queue = deque([(start, [start])])
    visited = {start}
    while queue:
        v, p = queue.popleft()
        for w in sorted(edges.get(v, ())):
            if w == start and len(p) > 1:
                return p + [start]
            if w in members and w not in visited:
                visited.add(w)
                queue.append((w, p + [w]))
    return component


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs = sys.argv[1:] or sorted(
        os.path.join(repo, "crates", d)
        for d in os.listdir(os.path.join(repo, "crates"))
        if os.path.isfile(os.path.join(repo, "crates", d, "Cargo.toml"))
    )
    found = False
    for crate_dir in dirs:
        for root in ("lib.rs", "main.rs"):
            root_file = os.path.join(crate_dir, "src", root)
            if not os.path.isfile(root_file):
                continue
            name = f"{os.path.basename(os.path.normpath(crate_dir))} (src/{root})"
            crate = Crate(name, root_file)
            edges = edges_of(crate)
            comps = cycles(edges)
            files = len(set(crate.modules.values()))
            if not comps:
                print(f"{name}: {files} files, no cycle")
                continue
            found = True
            print(f"{name}: {files} files, {len(comps)} cycle(s)")
            for comp in comps:
                rel = lambda f: os.path.relpath(f, os.path.join(crate_dir, "src"))
                loop = example_loop(edges, comp)
                print(f"  cycle among {len(comp)} files: {', '.join(rel(f) for f in comp)}")
                print(f"    e.g. {' -> '.join(rel(f) for f in loop)}")
                for a, b in zip(loop, loop[1:]):
                    line, shown = edges[a][b]
                    print(f"      {rel(a)}:{line}: {shown}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
