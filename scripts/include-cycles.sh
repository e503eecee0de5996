#!/bin/sh
# Lists the #include edges between the modules of worker/ and tables/ (a module is a .c/.h pair:
# worker/http/request) and prints every elementary cycle among them, one per line. Exits 1 when
# there is a cycle.
# Usage: scripts/include-cycles.sh [-e] [root]   (-e also prints the edges)
edges=0
if [ "$1" = "-e" ]; then edges=1; shift; fi
root=${1:-.}
exec /usr/bin/python3 - "$root" "$edges" <<'PY'
import os, re, sys

root, show_edges = sys.argv[1], sys.argv[2] == "1"
inc = re.compile(r'^\s*#\s*include\s+"((?:worker|tables)/[^"]+)\.h"', re.M)
graph = {}
for d, _, files in [w for top in ("worker", "tables") for w in os.walk(os.path.join(root, top))]:
    for f in files:
        if not f.endswith((".c", ".h")):
            continue
        path = os.path.join(d, f)
        mod = os.path.relpath(path, root)[:-2]
        deps = graph.setdefault(mod, set())
        with open(path, encoding="utf-8", errors="replace") as fh:
            for m in inc.findall(fh.read()):
                if m != mod:
                    deps.add(m)
for m in list(graph):
    for t in graph[m]:
        graph.setdefault(t, set())
if show_edges:
    for m in sorted(graph):
        for t in sorted(graph[m]):
            print(f"{m} -> {t}")

# Elementary cycles, each reported once from its smallest module (graph is small: plain DFS).
cycles = []
nodes = sorted(graph)
for i, start in enumerate(nodes):
    allowed = set(nodes[i:])
    stack = [(start, [start])]
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph[node]):
            if nxt == start:
                cycles.append(path + [start])
            elif nxt in allowed and nxt not in path:
                stack.append((nxt, path + [nxt]))
for c in sorted(cycles, key=lambda c: (len(c), c)):
    print("cycle: " + " -> ".join(c))
sys.exit(1 if cycles else 0)
PY
