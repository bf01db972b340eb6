#!/usr/bin/env python3
"""Checks conf.d files against tamada's JSON Schema (`tamada --schema`),
as an editor's YAML language server would.

usage: scripts/validate-conf.py SCHEMA.json FILE.yaml...

Prints one line per problem (file: path: message) and exits 1 if any.
Needs python3-jsonschema and python3-yaml (Debian packages)."""
import json, sys
import jsonschema, yaml

def leaves(errors):
    """The errors that say the most: under an anyOf/oneOf/if, those of the
    branch the document came closest to (a vhost file is judged as a vhost
    file, not as server.yaml)."""
    out = []
    for e in errors:
        if not e.context:
            out.append(e)
            continue
        branches = {}
        for c in e.context:
            branches.setdefault(c.relative_schema_path[0], []).append(c)
        # The branch whose errors go deepest (the right kind of file, with
        # mistakes inside) rather than the one failing at the top.
        best = max(branches.values(), key=lambda cs: max(len(c.absolute_path) for c in cs))
        out.extend(leaves(best))
    return out


schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
bad = 0
for path in sys.argv[2:]:
    doc = yaml.safe_load(open(path)) or {}
    # YAML keys may be numbers (error_pages: {404: ...}); JSON's are text.
    doc = json.loads(json.dumps(doc))
    errors = list(validator.iter_errors(doc))
    for leaf in leaves(errors):
        where = "/".join(str(p) for p in leaf.absolute_path) or "(top)"
        print(f"{path}: {where}: {leaf.message}")
    bad += bool(errors)
sys.exit(1 if bad else 0)
