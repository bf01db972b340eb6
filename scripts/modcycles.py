#!/usr/bin/env python3
"""Fails on an import cycle among the modules of a crate's src/.

    scripts/modcycles.py server/src

A module is a file (`a/b.rs` or `a/b/mod.rs` is `a::b`); it depends on
every module its `crate::...` paths name (the longest that exists),
`use crate::{..}` groups included. A child naming its parent is not an
edge (a parent declares its children). Inline `#[cfg(test)]` modules are
left out, and so are files named `tests.rs`. Prints each group of modules
that import each other in a circle, and exits 1 if there is one.
docs/ARCHITECTURE.md says which layer may use which.
"""
import os
import re
import sys


def modules(src):
    mods = {}
    for root, _, names in os.walk(src):
        for n in names:
            if not n.endswith(".rs") or n == "tests.rs":
                continue
            rel = os.path.relpath(os.path.join(root, n), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            with open(os.path.join(root, n)) as f:
                mods["::".join(rel)] = f.read()
    return mods


def edges(mods):
    def target(path):
        segs = path.split("::")
        for i in range(len(segs), 0, -1):
            m = "::".join(segs[:i])
            if m in mods:
                return m
        return None

    out = {m: set() for m in mods}
    for m, text in mods.items():
        text = re.sub(r"#\[cfg\(test\)\]\s*mod \w+\s*\{.*", "", text, flags=re.S)
        text = re.sub(r"//[^\n]*", "", text)
        paths = []
        for g in re.finditer(r"crate::\{([^;]*)\}", text, re.S):
            depth, cur = 0, ""
            for ch in g.group(1) + ",":
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    paths.append(cur.strip().split("{")[0].rstrip(":"))
                    cur = ""
                else:
                    cur += ch
        paths += re.findall(r"crate::((?:\w+::)*\w+)", text)
        for p in paths:
            t = target(p)
            if t is not None and t != m and t != "" and not m.startswith(t + "::"):
                out[m].add(t)
    return out


def cycles(g):
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
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
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "server/src"
    mods = modules(src)
    g = edges(mods)
    found = cycles(g)
    for comp in found:
        inner = {m: sorted(t for t in g[m] if t in comp) for m in comp}
        print(f"cycle of {len(comp)}: " + ", ".join(comp))
        for m, ts in inner.items():
            print(f"  {m} -> {', '.join(ts)}")
    print(f"{src}: {len(mods)} modules, {sum(len(c) for c in found)} in cycles")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
