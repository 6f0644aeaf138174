#!/usr/bin/env python3
"""Derives the protobuf schema table the API server decodes request bodies with.

Reads the prost-generated sources of the `k8s-pb` crate (field numbers and wire types of every
Kubernetes message) and the `k8s-openapi` crate (the JSON name of every field, since prost turns
`volumeID` into `volume_id` and loses the spelling), and writes
`host/apiserver/src/proto/schema.json`:

    {"<proto package>": {"<Message>": [[tag, "jsonName", "type", repeated, "message type"], ...]}}

`type` is a protobuf scalar (`string`, `bytes`, `bool`, `int32`, `int64`, `double`), `message`,
or `map:<value>` (`map:string`, `map:bytes`, `map:message`); keys of Kubernetes maps are strings.
An empty JSON name marks a struct Go embeds (`json:",inline"`): its fields merge into the parent.
Run it again after bumping either crate:

    python3 host/apiserver/tools/proto-schema.py [~/.cargo/registry/src/<index>]
"""
import glob
import json
import os
import re
import sys

REGISTRY = sys.argv[1] if len(sys.argv) > 1 else glob.glob(os.path.expanduser("~/.cargo/registry/src/*"))[0]
PB = os.path.join(REGISTRY, "k8s-pb-0.9.0", "src")
OPENAPI = os.path.join(REGISTRY, "k8s-openapi-0.28.0", "src")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "proto", "schema.json")

# Fields whose JSON name no snake-case spelling recovers, by message.
OVERRIDES = {
    "JsonSchemaProps": {"schema": "$schema", "ref": "$ref"},
    "BoundObjectReference": {"u_id": "uid"},
    "JsonSchemaPropsOrArray": {"j_son_schemas": "JSONSchemas"},
}


def json_names():
    """Rust field name -> JSON name, from k8s-openapi's hand-written deserializers."""
    names = {}
    pattern = re.compile(r'"([A-Za-z0-9_$-]+)" => Field::Key_([a-z0-9_]+)')
    for path in glob.glob(os.path.join(OPENAPI, "v1_*", "**", "*.rs"), recursive=True):
        with open(path, encoding="utf-8") as f:
            for json_name, rust in pattern.findall(f.read()):
                # Upstream spells a few fields `Port`/`Type` in legacy types; prefer lower case.
                if rust not in names or json_name[0].islower():
                    names.setdefault(rust, json_name)
                    if json_name[0].islower():
                        names[rust] = json_name
    for rust, json_name in list(names.items()):
        names.setdefault(normal(json_name), json_name)
    return names


def normal(name):
    """A spelling-blind key: `pod_cid_rs`, `podCIDRs` and `x-kubernetes-list-type` meet."""
    return "~" + re.sub(r"[^a-z0-9]", "", name.lower())


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


FIELD = re.compile(r"#\[prost\((?P<attr>[^\]]*)\)\]\s*pub (?P<name>(?:r#)?[a-z0-9_]+):\s*(?P<ty>[^;{}]*?),\s*(?=(?:///|#\[|pub |\}))", re.S)
# `pub struct Empty {}` sits on one line; others close with `}` alone on a line.
STRUCT = re.compile(r"pub struct (\w+) \{(?:\}|(.*?)\n\})", re.S)


def resolve(module, ty):
    """The full proto name of a Rust type path written inside `module`."""
    ty = re.sub(r"\s+", "", ty).replace(",>", ">").rstrip(",")
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while ty.startswith(wrapper):
            ty = ty[len(wrapper):-1]
    if ty.startswith("::prost::alloc::collections::BTreeMap<"):
        ty = ty[len("::prost::alloc::collections::BTreeMap<"):-1].split(",", 1)[1]
    parts = ty.split("::")
    base = list(module)
    while parts and parts[0] == "super":
        base.pop()
        parts.pop(0)
    return ".".join(base + parts)


def main():
    names = json_names()
    schema = {}
    missing = set()
    for path in sorted(glob.glob(os.path.join(PB, "**", "mod.rs"), recursive=True)):
        module = os.path.relpath(os.path.dirname(path), PB).split(os.sep)
        with open(path, encoding="utf-8") as f:
            source = f.read()
        messages = {}
        for struct, body in STRUCT.findall(source):
            fields = []
            for m in FIELD.finditer(body + "\n}"):
                attr, rust, ty = m.group("attr"), m.group("name").removeprefix("r#"), m.group("ty")
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                kind = attr.split(",")[0].split("=")[0].strip()
                repeated = 1 if re.search(r"\brepeated\b", attr) else 0
                message = ""
                if kind in ("btree_map", "map", "hash_map"):
                    key, value = re.search(r'map = "(\w+), (\w+)"', attr).groups()
                    assert key == "string", (struct, rust, key)
                    kind = "map:" + value
                    if value == "message":
                        message = resolve(module, ty)
                elif kind == "message":
                    message = resolve(module, ty)
                json_name = (
                    OVERRIDES.get(struct, {}).get(rust)
                    or names.get(rust)
                    or names.get(rust + "_")
                    or names.get(normal(rust))
                )
                if json_name is None and message and snake(message.rsplit(".", 1)[1]) == rust:
                    # Go embeds this struct (`json:",inline"`): its fields sit in the parent.
                    json_name = ""
                if json_name is None:
                    json_name = camel(rust)
                    missing.add(f"{struct}.{rust} -> {json_name}")
                field = [tag, json_name, kind, repeated]
                if message:
                    field.append(message)
                fields.append(field)
            messages[struct] = fields
        if messages:
            schema[".".join(module)] = messages
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(schema, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    count = sum(len(m) for m in schema.values())
    print(f"{count} messages in {len(schema)} packages -> {os.path.normpath(OUT)}", file=sys.stderr)
    for line in sorted(missing):
        print(f"  no JSON name in k8s-openapi, guessed: {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
