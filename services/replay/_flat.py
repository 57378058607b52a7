"""Reports as flat rows for spreadsheets, and back: the CSV columns, driven by the schemas.

A nested record's fields become columns named by their path
(``report.header.originator``, ``report.location.point.lat``); an optional
record whose value is null leaves its columns empty; arrays, maps and unions
of several types are one column holding JSON. Times are ISO 8601 in UTC,
booleans ``true``/``false``. An empty cell is null (so an optional text that
was the empty string reads back as null).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from services.replay._record import json_default

Schema = Any
_SCALARS = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class _Names:
    """Named types met while walking a self-contained schema (defined once, then referenced)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.known: dict[str, Schema] = {}

    def resolve(self, schema: Schema) -> Schema:
        if isinstance(schema, str):
            if schema in _SCALARS:
                return schema
            full = schema if "." in schema else f"{self.namespace}.{schema}"
            return self.known[full]
        if isinstance(schema, dict) and schema.get("type") in {"record", "enum", "fixed"}:
            name = schema["name"]
            full = name if "." in name else f"{schema.get('namespace', self.namespace)}.{name}"
            self.known[full] = schema
        return schema

    def register(self, schema: Schema) -> None:
        """Know every named type defined anywhere inside ``schema`` (a subtree not walked)."""
        if isinstance(schema, list):
            for branch in schema:
                self.register(branch)
            return
        if not isinstance(schema, dict):
            return
        self.resolve(schema)
        kind = schema.get("type")
        if isinstance(kind, dict | list):
            self.register(kind)
        for item in schema.get("fields", ()):
            self.register(item["type"])
        for key in ("items", "values"):
            if key in schema:
                self.register(schema[key])


def _kind(schema: Schema) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return str(schema["type"]) if not isinstance(schema["type"], dict | list) else "nested"


def _optional(schema: list[Any]) -> Schema | None:
    """The one non-null branch of a union, or None when there are several."""
    branches = [b for b in schema if b != "null"]
    return branches[0] if len(branches) == 1 else None


def columns(schema: Schema, namespace: str, prefix: str = "report.") -> Iterator[str]:
    """The flat column names of one report schema, in field order."""
    yield from _columns_with(schema, _Names(namespace), prefix)


def _columns_with(schema: Schema, names: _Names, prefix: str) -> Iterator[str]:
    def walk(node: Schema, path: str) -> Iterator[str]:
        node = names.resolve(node)
        if isinstance(node, list):
            branch = _optional(node)
            if branch is not None and _kind(names.resolve(branch)) == "record":
                yield from walk(branch, path)
                return
            names.register(node)
            yield path.rstrip(".")
            return
        if isinstance(node, dict) and node.get("type") == "record":
            for item in node["fields"]:
                yield from walk(item["type"], f"{path}{item['name']}.")
            return
        if isinstance(node, dict) and isinstance(node.get("type"), dict | list):
            yield from walk(node["type"], path)
            return
        names.register(node)
        yield path.rstrip(".")

    yield from walk(schema, prefix)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return str(json_default(value))
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=json_default).decode()
    return str(value)


def flatten(
    data: dict[str, Any], schema: Schema, namespace: str, prefix: str = "report."
) -> dict[str, str]:
    """One report's cells by column name (see :func:`columns`)."""
    names = _Names(namespace)
    out: dict[str, str] = {}

    def walk(node: Schema, value: Any, path: str) -> None:
        node = names.resolve(node)
        if isinstance(node, list):
            branch = _optional(node)
            if branch is not None and _kind(names.resolve(branch)) == "record":
                if value is not None:
                    walk(branch, value, path)
                else:
                    names.register(branch)  # its named types may be used further on
                return
            names.register(node)
            out[path.rstrip(".")] = _cell(value)
            return
        if isinstance(node, dict) and node.get("type") == "record":
            for item in node["fields"]:
                walk(item["type"], value.get(item["name"]), f"{path}{item['name']}.")
            return
        if isinstance(node, dict) and isinstance(node.get("type"), dict | list):
            walk(node["type"], value, path)
            return
        names.register(node)
        out[path.rstrip(".")] = _cell(value)

    walk(schema, data, prefix)
    return out


def _parse(node: Schema, text: str) -> Any:
    kind = _kind(node)
    logical = node.get("logicalType") if isinstance(node, dict) else None
    if logical == "timestamp-millis":
        return datetime.fromisoformat(text)
    if logical == "uuid":
        return uuid.UUID(text)
    if kind == "boolean":
        return text == "true"
    if kind in {"int", "long"}:
        return int(text)
    if kind in {"float", "double"}:
        return float(text)
    if kind in {"array", "map", "union"}:
        return orjson.loads(text)
    return text


def unflatten(
    row: dict[str, str], schema: Schema, namespace: str, prefix: str = "report."
) -> dict[str, Any]:
    """The report one CSV row holds, as plain data (the inverse of :func:`flatten`)."""
    names = _Names(namespace)

    def walk(node: Schema, path: str) -> Any:
        node = names.resolve(node)
        if isinstance(node, list):
            branch = _optional(node)
            if branch is not None and _kind(names.resolve(branch)) == "record":
                known = dict(names.known)
                inner = list(_columns_with(branch, names, path))
                names.known = known
                if not any(row.get(c) for c in inner):
                    names.register(branch)  # its named types may be used further on
                    return None
                return walk(branch, path)
            names.register(node)
            text = row.get(path.rstrip("."), "")
            if text == "":
                return None
            return _parse(branch if branch is not None else node, text)
        if isinstance(node, dict) and node.get("type") == "record":
            return {
                item["name"]: walk(item["type"], f"{path}{item['name']}.")
                for item in node["fields"]
            }
        if isinstance(node, dict) and isinstance(node.get("type"), dict | list):
            return walk(node["type"], path)
        names.register(node)
        text = row.get(path.rstrip("."), "")
        if text == "" and _kind(node) != "string":
            return None
        return _parse(node, text)

    found: dict[str, Any] = walk(schema, prefix)
    return found
