"""The OpenAPI document as the one source of truth for request validation.

The gateway serves platform-api.openapi.yaml (package data of `gateway`) as written and
validates every request body, query and path parameter against the schemas in it with
a JSON Schema 2020-12 validator, so the document cannot drift from what is enforced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.runtime.errors import FieldError, ValidationFailed

#: The Platform API contract, shipped inside the `gateway` package.
SPEC: Traversable = files("gateway") / "platform-api.openapi.yaml"
_BASE_URI = "urn:gate4:platform-api"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass
class Parameter:
    name: str
    location: str
    required: bool
    schema: dict[str, Any]
    validator: Draft202012Validator


@dataclass
class OperationContract:
    operation_id: str
    method: str
    path: str
    body_required: bool = False
    body_validator: Draft202012Validator | None = None
    parameters: dict[tuple[str, str], Parameter] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)

    def params_in(self, location: str) -> list[Parameter]:
        return [p for (loc, _), p in self.parameters.items() if loc == location]


class ApiContract:
    def __init__(self, path: Traversable = SPEC) -> None:
        self.path = path
        self.yaml_bytes = path.read_bytes()
        self.document: dict[str, Any] = yaml.safe_load(self.yaml_bytes)
        self.json_bytes = json.dumps(self.document, separators=(",", ":")).encode()
        self._registry: Registry[Any] = Registry().with_resource(
            _BASE_URI, Resource.from_contents(self.document, default_specification=DRAFT202012)
        )
        self.operations: dict[str, OperationContract] = {}
        for route, item in self.document.get("paths", {}).items():
            shared = item.get("parameters", [])
            for method in HTTP_METHODS:
                if method in item:
                    self._add(route, method, item[method], shared)

    def _validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator(
            {"$ref": f"{_BASE_URI}{pointer}"},
            registry=self._registry,
            format_checker=FormatChecker(),
        )

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            ref = node["$ref"]
            target: Any = self.document
            for part in ref.removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def _add(
        self, route: str, method: str, op: dict[str, Any], shared: list[dict[str, Any]]
    ) -> None:
        contract = OperationContract(
            operation_id=op["operationId"],
            method=method.upper(),
            path=route,
            extensions={k: v for k, v in op.items() if k.startswith("x-")},
        )
        for index, raw in enumerate([*shared, *op.get("parameters", [])]):
            param = self._resolve(raw)
            if param["in"] not in ("query", "path"):
                continue
            # Point the validator at the parameter's own schema wherever it is defined.
            pointer = (
                raw["$ref"].removeprefix("#") + "/schema"
                if "$ref" in raw
                else _pointer(
                    "paths", route, method, "parameters", str(index - len(shared)), "schema"
                ).removeprefix("#")
                if index >= len(shared)
                else _pointer("paths", route, "parameters", str(index), "schema").removeprefix("#")
            )
            contract.parameters[(param["in"], param["name"])] = Parameter(
                name=param["name"],
                location=param["in"],
                required=bool(param.get("required", param["in"] == "path")),
                schema=self._resolve(param.get("schema", {})),
                validator=self._validator("#" + pointer),
            )
        body = op.get("requestBody")
        if body is not None:
            resolved = self._resolve(body)
            contract.body_required = bool(resolved.get("required", False))
            if "application/json" in resolved.get("content", {}):
                base = (
                    body["$ref"].removeprefix("#")
                    if "$ref" in body
                    else _pointer("paths", route, method, "requestBody").removeprefix("#")
                )
                contract.body_validator = self._validator(
                    "#" + base + "/content/application~1json/schema"
                )
        self.operations[contract.operation_id] = contract

    # -- validation ------------------------------------------------------------------------

    def validate_body(self, operation_id: str, body: Any) -> None:
        validator = self.operations[operation_id].body_validator
        if validator is not None:
            _raise_if_invalid(
                validator.iter_errors(body), "request body does not match the API contract"
            )

    def parse_parameters(
        self,
        operation_id: str,
        location: str,
        values: Mapping[str, str],
        multi: Mapping[str, list[str]] | None = None,
    ) -> dict[str, Any]:
        """Coerces and validates query or path parameters; unknown query names are refused."""
        contract = self.operations[operation_id]
        params = {p.name: p for p in contract.params_in(location)}
        problems: list[FieldError] = []
        if location == "query":
            problems += [
                FieldError(name, "unknown query parameter") for name in values if name not in params
            ]
        parsed: dict[str, Any] = {}
        for name, param in params.items():
            if name not in values:
                if param.required:
                    problems.append(FieldError(name, "required parameter is missing"))
                continue
            if multi is not None and len(multi.get(name, [])) > 1:
                problems.append(FieldError(name, "parameter given more than once"))
                continue
            value = _coerce(values[name], param.schema)
            errs = list(param.validator.iter_errors(value))
            if errs:
                problems.append(FieldError(name, errs[0].message))
            else:
                parsed[name] = value
        if problems:
            raise ValidationFailed(f"invalid {location} parameters", field_errors=problems)
        return parsed


def _coerce(raw: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?[0-9]{1,18}", raw):
        return int(raw)
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


def field_name(error: ValidationError) -> str:
    name = ""
    for part in error.absolute_path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    if error.validator == "required" and isinstance(error.instance, dict):
        required: list[str] = list(error.validator_value)  # type: ignore[arg-type]
        missing = [p for p in required if p not in error.instance]
        if missing:
            name = f"{name}.{missing[0]}" if name else missing[0]
    forbidden = _forbidden_fields(error)
    if forbidden:
        name = f"{name}.{forbidden[0]}" if name else forbidden[0]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        allowed = set(schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            name = f"{name}.{extra[0]}" if name else extra[0]
    return name


def _forbidden_fields(error: ValidationError) -> list[str]:
    """Fields a `not: {required: [...]}` rules out (a limit price on a market order, say)."""
    if error.validator != "not" or not isinstance(error.validator_value, Mapping):
        return []
    return list(error.validator_value.get("required", []))


def _message(error: ValidationError) -> str:
    # jsonschema would quote the whole object and the rule; name what is wrong instead.
    return "not allowed in this request" if _forbidden_fields(error) else error.message


def _raise_if_invalid(errors: Iterable[ValidationError], detail: str) -> None:
    problems = [FieldError(field_name(e) or "(body)", _message(e)) for e in _leaves(errors)]
    if problems:
        unique = list(dict.fromkeys(problems))
        raise ValidationFailed(
            f"{detail}: " + "; ".join(f"{p.field}: {p.message}" for p in unique[:5]),
            field_errors=unique,
        )


def _leaves(errors: Iterable[ValidationError]) -> list[ValidationError]:
    """Reports the specific failures inside oneOf/anyOf/if-then, not only the wrapper."""
    out: list[ValidationError] = []
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        if error.context and error.validator in ("anyOf", "oneOf"):
            out.extend(_leaves(error.context))
        else:
            out.append(error)
    return out
