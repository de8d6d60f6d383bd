"""A typed function as a tool: its JSON Schema from the type hints (pydantic), its description from
the docstring, and the checks on both ends (arguments in, result out).

A parameter typed `CallContext` (or `CallContext | None`) is not an argument the model fills: it
is left out of the schema and receives who is asking, from the request's headers.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model

from wxbot_common.skill_contract import COMMAND, TOOL_NAME, CallContext, tool_metadata

ToolFn = Callable[..., Awaitable[Any]]


class NoCallerError(Exception):
    """The tool needs to know who is asking, and the request did not say."""


def _context_kind(hint: Any) -> str | None:
    """`required` for `CallContext`, `optional` for `CallContext | None`, else None."""
    if hint is CallContext:
        return "required"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = set(typing.get_args(hint))
        if CallContext in members:
            if members != {CallContext, type(None)}:
                raise TypeError("a CallContext parameter is `CallContext` or `CallContext | None`, nothing else")
            return "optional"
    return None


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str
    arguments: type[BaseModel]  # validates the request body; extra keys are refused
    result: TypeAdapter[Any]
    fn: ToolFn
    command: str | None = None
    context_param: str | None = None  # the parameter that receives the CallContext, if any
    context_required: bool = False

    @property
    def parameters(self) -> dict[str, Any]:
        return self.arguments.model_json_schema()

    def metadata(self) -> dict[str, str]:
        return tool_metadata(self.description, self.parameters, self.command)

    async def invoke(self, body: bytes, context: CallContext | None = None) -> bytes:
        """Check the JSON arguments, call the function, the result as JSON; a pydantic
        ValidationError when the arguments do not fit, NoCallerError when the function needs a
        context and there is none."""
        args = self.arguments.model_validate_json(body or b"{}")
        kwargs = {name: getattr(args, name) for name in type(args).model_fields}
        if self.context_param is not None:
            if context is None and self.context_required:
                raise NoCallerError(f"{self.name} needs to know who is asking (the Wxbot-* caller headers)")
            kwargs[self.context_param] = context
        value = await self.fn(**kwargs)
        return self.result.dump_json(value)


def function_tool(fn: ToolFn, name: str | None = None, command: str | None = None) -> FunctionTool:
    """Every parameter needs a type hint; a default makes it optional. `Annotated[str, Field(description=...)]`
    tells the model more about one parameter."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{fn.__qualname__}: a tool is an async function")
    name = name or fn.__name__
    if not TOOL_NAME.match(name):
        raise ValueError(f"tool name {name!r}: 1-64 of A-Z a-z 0-9 _ -")
    if command is not None and not COMMAND.match(command):
        raise ValueError(f"command {command!r}: a slash and a word, like /weather")
    description = inspect.getdoc(fn)
    if not description:
        raise ValueError(f"{fn.__qualname__}: the docstring is what the model reads to choose the tool; write one")
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    context_param: str | None = None
    context_kind: str | None = None
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name not in hints:
            raise TypeError(f"{fn.__qualname__}: parameter {param.name!r} needs a type hint (no *args/**kwargs)")
        kind = _context_kind(hints[param.name])
        if kind is not None:
            if context_param is not None:
                raise TypeError(f"{fn.__qualname__}: one CallContext parameter at most")
            context_param, context_kind = param.name, kind
            continue
        fields[param.name] = (hints[param.name], ... if param.default is param.empty else param.default)
    arguments = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    return FunctionTool(
        name,
        description,
        arguments,
        TypeAdapter(hints.get("return", Any)),
        fn,
        command,
        context_param,
        context_kind == "required",
    )
