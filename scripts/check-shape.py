#!/usr/bin/env python3
"""Checks the shape ARCHITECTURE.md promises: no import cycle between the modules of a crate, no
source file over 900 lines outside tests, each daemon's `daemon.rs` at most 450 lines.

The rule (ARCHITECTURE.md, "Layering"): among the child modules of any one module, the
"uses" relation has no cycle. Child A uses sibling B when any file in A's subtree names
something in B's subtree (`use crate::b::..`, `super::b::..`, an inline `crate::b::x` path).
A parent naming its own children (or a child naming its parent) is not a sibling edge: a module
that declares children and re-exports their items is a facade, not a cycle. Test modules
(`#[cfg(test)] mod tests { .. }` at the end of a file) are ignored, since tests may reach anywhere.

Usage: scripts/check-shape.py [package-dir ...]   (default: every package of the workspace)
Exit status 1 and one line per problem when there is one.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["igmp-ext", "daemon-kit", "verifier", "dns-keystore", "control-channel",
            "manycast-server", "tests"]

MOD_DECL = re.compile(
    r'((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;')
PATH_ATTR = re.compile(r'#\[path\s*=\s*"([^"]+)"\]')
CFG_TEST = re.compile(r'#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*;')
USE_STMT = re.compile(r'\buse\s+([^;]+);', re.S)
CRATE_PATH = re.compile(r'\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)')
COMMENT = re.compile(r'//[^\n]*|/\*.*?\*/', re.S)
STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def strip_tests(text):
    """Drops `#[cfg(test)] mod x { ... }` blocks (brace-matched)."""
    out, i = [], 0
    pattern = re.compile(r'#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{')
    while True:
        m = pattern.search(text, i)
        if not m:
            out.append(text[i:])
            return ''.join(out)
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {'{': 1, '}': -1}.get(text[j], 0)
            j += 1
        i = j


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e'] (enough for module resolution)."""
    tree = re.sub(r'\s+', '', tree)
    m = re.match(r'^(.*?)\{(.*)\}$', tree)
    if not m:
        return [re.sub(r'as\w+$', '', tree)]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ''
    for ch in inner:
        if ch == ',' and depth == 0:
            parts.append(cur)
            cur = ''
            continue
        depth += {'{': 1, '}': -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    return [p2 for p in parts if p for p2 in expand_use(prefix + p)]


class Crate:
    def __init__(self, root_file):
        self.modules = {}  # module path tuple -> file text (tests stripped)
        self.walk(root_file, (), is_root=True)

    def walk(self, path, modpath, is_root=False, dir_owner=True):
        try:
            raw = path.read_text()
        except OSError:
            return
        text = STRING.sub('""', COMMENT.sub('', raw))
        text = CFG_TEST.sub('', text)
        text = strip_tests(text)
        self.modules[modpath] = text
        # Children of `a.rs` live in `a/`; of `mod.rs`, `lib.rs`, `main.rs` in the same folder.
        if is_root or path.name == 'mod.rs':
            child_dir = path.parent
        else:
            child_dir = path.parent / path.stem
        for m in MOD_DECL.finditer(text):
            attrs, name = m.group(1), m.group(2)
            p = PATH_ATTR.search(attrs or '')
            if p:
                child = (path.parent / p.group(1)).resolve()
            elif (child_dir / f'{name}.rs').exists():
                child = child_dir / f'{name}.rs'
            else:
                child = child_dir / name / 'mod.rs'
            self.walk(child, modpath + (name,))

    def resolve(self, modpath, ref):
        """The module a path like `crate::a::b::Item` or `super::x` names (longest known prefix)."""
        segs = ref.split('::')
        if segs[0] == 'crate':
            base, rest = (), segs[1:]
        elif segs[0] in ('super', 'self'):
            base = modpath
            while segs and segs[0] in ('super', 'self'):
                if segs[0] == 'super':
                    base = base[:-1]
                segs = segs[1:]
            rest = segs
        else:
            # A bare path names a child of this module (2018 edition), or an external crate.
            if modpath + (segs[0],) in self.modules:
                base, rest = modpath, segs
            else:
                return None
        target = base
        for s in rest:
            if target + (s,) in self.modules:
                target = target + (s,)
            else:
                break
        return target

    def edges(self):
        found = set()
        for modpath, text in self.modules.items():
            refs = []
            for u in USE_STMT.finditer(text):
                refs.extend(expand_use(u.group(1)))
            refs.extend(m.group(1) + m.group(2) for m in CRATE_PATH.finditer(text))
            for ref in refs:
                target = self.resolve(modpath, ref)
                if target is not None:
                    found.add((modpath, target))
        return found


def sibling_cycles(crate):
    """For each module, the cycles among its children."""
    edges = crate.edges()
    cycles = []
    parents = {m[:-1] for m in crate.modules if m}
    for parent in sorted(parents):
        n = len(parent) + 1
        graph = {}
        for a, b in edges:
            if len(a) >= n and len(b) >= n and a[:n - 1] == parent and b[:n - 1] == parent:
                ca, cb = a[:n], b[:n]
                if ca != cb:
                    graph.setdefault(ca, set()).add(cb)
        cycles.extend(find_cycles(graph))
    return cycles


def find_cycles(graph):
    """One representative cycle per strongly connected component with more than one node."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def crate_roots(pkg):
    src = ROOT / pkg / 'src'
    roots = [p for p in (src / 'lib.rs', src / 'main.rs') if p.exists()]
    roots += sorted((src / 'bin').glob('*/main.rs')) + sorted((src / 'bin').glob('*.rs'))
    return roots


MAX_LINES = 900
MAX_DAEMON_LINES = 450


def oversized(pkg):
    """Source files (not tests, benches or `*_tests.rs`) over the line limits."""
    for path in sorted((ROOT / pkg / 'src').rglob('*.rs')):
        if path.name.endswith('_tests.rs') or 'tests' in path.relative_to(ROOT / pkg / 'src').parts:
            continue
        lines = path.read_text().count('\n')
        limit = MAX_DAEMON_LINES if path.name == 'daemon.rs' else MAX_LINES
        if lines > limit:
            yield f'{path.relative_to(ROOT)}: {lines} lines, over {limit}'


def main():
    pkgs = sys.argv[1:] or PACKAGES
    bad = 0
    for pkg in pkgs:
        for root in crate_roots(pkg):
            crate = Crate(root)
            for comp in sibling_cycles(crate):
                names = ' <-> '.join('::'.join(m) for m in comp)
                print(f'{pkg} ({root.relative_to(ROOT)}): import cycle: {names}')
                bad += 1
        for line in oversized(pkg):
            print(line)
            bad += 1
    if bad:
        sys.exit(1)
    print(f'check-shape: no import cycle, no file over its line limit in {", ".join(pkgs)}')


if __name__ == '__main__':
    main()
