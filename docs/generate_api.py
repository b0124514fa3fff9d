"""Write docs/api.md from the comments in protos/qrsys/v1, so it never drifts.

Run by ``make docs``; ``make proto-check`` fails when the committed file
differs from what this prints.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"

SERVICE, MESSAGE, ENUM = 6, 4, 5
METHOD, FIELD, NESTED, VALUE = 2, 2, 3, 2

SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
}


def load() -> descriptor_pb2.FileDescriptorSet:
    """Compile the protos with their comments into a descriptor set."""
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        status = protoc.main(
            [
                "protoc",
                f"-I{PROTOS}",
                f"-I{Path(protoc.__file__).parent / '_proto'}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *files,
            ]
        )
        if status != 0:
            raise SystemExit(f"protoc failed with {status}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def comments(proto: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Leading comments by descriptor path, as one paragraph each."""
    found = {}
    for location in proto.source_code_info.location:
        text = location.leading_comments.strip()
        if text:
            paragraphs = [
                " ".join(line.strip() for line in block.splitlines())
                for block in text.split("\n\n")
            ]
            found[tuple(location.path)] = "\n\n".join(paragraphs)
    return found


def type_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    """How a field's type reads in the docs, linked when it is ours."""
    if field.type_name:
        name = field.type_name.lstrip(".")
        short = name.removeprefix("qrsys.v1.")
        if short != name:
            return f"[{short}](#{short.lower().replace('.', '')})"
        return f"`{name}`"
    return f"`{SCALARS[field.type]}`"


def cell(text: str) -> str:
    """Text made safe for one table cell."""
    return text.replace("|", "\\|").replace("\n\n", "<br>")


def render(files: descriptor_pb2.FileDescriptorSet) -> Iterator[str]:
    """The lines of docs/api.md."""
    yield "# qrsys API reference"
    yield ""
    yield "Generated from the comments in `protos/qrsys/v1` by `make docs`; edit"
    yield "the `.proto` files, not this page."
    for proto in files.file:
        if not proto.package.startswith("qrsys."):
            continue
        notes = comments(proto)
        yield ""
        yield f"## {proto.name}"
        for i, service in enumerate(proto.service):
            yield ""
            yield f"### {service.name}"
            yield ""
            yield notes.get((SERVICE, i), "")
            yield ""
            yield "| RPC | request | response | description |"
            yield "|---|---|---|---|"
            for j, method in enumerate(service.method):
                request = method.input_type.removeprefix(".qrsys.v1.")
                response = method.output_type.removeprefix(".qrsys.v1.")
                if method.server_streaming:
                    response = f"stream {response}"
                note = cell(notes.get((SERVICE, i, METHOD, j), ""))
                yield f"| {method.name} | {request} | {response} | {note} |"
        yield from messages(proto.message_type, notes, (MESSAGE,), "")
        for i, enum in enumerate(proto.enum_type):
            yield from enum_lines(enum, notes, (ENUM, i), "")


def messages(
    types: Sequence[descriptor_pb2.DescriptorProto],
    notes: dict[tuple[int, ...], str],
    prefix: tuple[int, ...],
    outer: str,
) -> Iterator[str]:
    for i, message in enumerate(types):
        path = (*prefix, i)
        name = f"{outer}{message.name}"
        yield ""
        yield f"### {name}"
        yield ""
        yield notes.get(path, "")
        if message.field:
            yield ""
            yield "| field | type | description |"
            yield "|---|---|---|"
            for j, field in enumerate(message.field):
                kind = type_name(field)
                if field.label == field.LABEL_REPEATED:
                    kind = f"repeated {kind}"
                elif field.proto3_optional:
                    kind = f"optional {kind}"
                note = cell(notes.get((*path, FIELD, j), ""))
                yield f"| `{field.name}` | {kind} | {note} |"
        yield from messages(message.nested_type, notes, (*path, NESTED), f"{name}.")
        for k, enum in enumerate(message.enum_type):
            yield from enum_lines(enum, notes, (*path, 4, k), f"{name}.")


def enum_lines(
    enum: descriptor_pb2.EnumDescriptorProto,
    notes: dict[tuple[int, ...], str],
    path: tuple[int, ...],
    outer: str,
) -> Iterator[str]:
    yield ""
    yield f"### {outer}{enum.name}"
    yield ""
    yield notes.get(path, "")
    yield ""
    yield "| value | number | description |"
    yield "|---|---|---|"
    for j, value in enumerate(enum.value):
        note = cell(notes.get((*path, VALUE, j), ""))
        yield f"| `{value.name}` | {value.number} | {note} |"


def main() -> int:
    """Print the reference to stdout."""
    text = "\n".join(render(load()))
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    sys.stdout.write(text.rstrip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
