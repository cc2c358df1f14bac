#!/usr/bin/env python3
"""Extract the protobuf field tables of the Kubernetes API types Skiff serves
(field number, name, wire type, message type) from the prost code of the k8s-pb
crate, into control/src/api/proto_schema.json. The table lets the API server
decode `application/vnd.kubernetes.protobuf` request bodies without generated
code. Usage: tools/gen_proto_schema.py [PATH-TO-k8s-pb-SRC]"""
import glob
import json
import os
import re
import sys

PACKAGES = [
    "api/core/v1", "api/apps/v1", "api/batch/v1", "api/autoscaling/v1", "api/autoscaling/v2",
    "api/coordination/v1", "api/discovery/v1", "api/networking/v1", "api/node/v1",
    "api/policy/v1", "api/rbac/v1", "api/authorization/v1", "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/api/resource", "apimachinery/pkg/util/intstr", "apimachinery/pkg/runtime",
]


def find_src():
    if len(sys.argv) > 1:
        return sys.argv[1]
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    hits = sorted(glob.glob(f"{home}/registry/src/*/k8s-pb-*/src"))
    if not hits:
        sys.exit("k8s-pb sources not found: run `cargo info k8s-pb` (downloads it) or pass the path")
    return hits[-1]


ATTR = re.compile(r'#\[prost\((.*)\)\]')
FIELD = re.compile(r'pub (r#)?(\w+):\s*(.*?),?$')


def resolve(module, rust_type):
    """Message path of a Rust type referenced from `module` (dotted)."""
    t = rust_type
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        if t.startswith(wrapper):
            t = t[len(wrapper):-1]
    parts = module.split(".")
    segs = t.split("::")
    while segs and segs[0] == "super":
        parts = parts[:-1]
        segs = segs[1:]
    return ".".join(parts + segs)


def parse(src, pkg):
    path = os.path.join(src, pkg, "mod.rs")
    module = pkg.replace("/", ".")
    text = open(path).read()
    out = {}
    current = None
    pending = None
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"pub struct (\w+) \{", line)
        if m:
            current = f"{module}.{m.group(1)}"
            out[current] = []
            continue
        if current is None:
            continue
        if line == "}":
            current = None
            continue
        a = ATTR.match(line)
        if a:
            pending = a.group(1)
            buf = ""
            continue
        if pending is not None and line.startswith("pub "):
            buf = line
        elif pending is not None and buf:
            buf += " " + line
        balanced = buf.count("<") == buf.count(">")
        if pending is not None and buf and balanced and buf.rstrip().endswith(","):
            f = FIELD.match(buf.rstrip())
            name = f.group(2)
            rust_type = f.group(3).replace(" ", "").rstrip(",")
            if rust_type.endswith(",>"):
                rust_type = rust_type[:-2] + ">"
            spec = pending
            tag = int(re.search(r'tag = "(\d+)"', spec).group(1))
            if spec.startswith("btree_map") or spec.startswith("map"):
                kv = re.search(r'map = "([^"]+)"', spec).group(1).replace(" ", "").split(",")
                key, val = kv[0], kv[1]
                vtype = ""
                if val == "message":
                    inner = rust_type[rust_type.index("<") + 1:-1]
                    inner = inner.split(",", 1)[1].rstrip(",")
                    vtype = resolve(module, inner)
                out[current].append([tag, name, "map", key, val, vtype])
            else:
                kind = spec.split(",")[0].strip().split(" ")[0]
                label = "repeated" if "repeated" in spec else "optional"
                mtype = resolve(module, rust_type) if kind == "message" else ""
                out[current].append([tag, name, label, kind, mtype, ""])
            pending = None
            buf = ""
    return out


def main():
    src = find_src()
    table = {}
    for pkg in PACKAGES:
        table.update(parse(src, pkg))
    dest = os.path.join(os.path.dirname(__file__), "..", "control", "src", "api", "proto_schema.json")
    with open(dest, "w") as f:
        json.dump(table, f, separators=(",", ":"), sort_keys=True)
    print(f"{len(table)} messages -> {os.path.normpath(dest)}")


if __name__ == "__main__":
    main()
