"""The generic half of ``freight serve``'s options: environment variables, the config file,
``--print-config`` and one-line startup errors, for any set of click options.

Where a value comes from is click's own order, **flag > environment > config file >
default**. :func:`every_option_from_environment` gives each option the variable
``FREIGHT_<NAME>``; :func:`load_config_file`, the callback of an eager ``--config`` option,
puts the TOML file's values in the context's ``default_map`` after checking each key names
an option and each value has its type.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

__all__ = [
    "ServeCommand",
    "StartupFailed",
    "every_option_from_environment",
    "load_config_file",
    "render_config",
]

ENV_PREFIX = "FREIGHT_"
# Options that say how to run this command rather than what the server is.
_NOT_SETTINGS = frozenset({"config", "print_config"})
_SECRETS = frozenset({"token", "db", "hook_secret"})  # a DSN may carry a password


class StartupFailed(click.ClickException):
    """One line, ``freight: error: ...``, and exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        message = " ".join(self.format_message().split("\n"))
        click.echo(f"freight: error: {message}", err=True)


class ServeCommand(click.Command):
    """Turns click's own usage errors (a bad value, an unknown flag) into one line too."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise StartupFailed(exc.format_message()) from None


def _option_key(param: click.Parameter) -> str:
    """The option's long name without dashes: its config file key and environment name."""
    long = next(o for o in param.opts if o.startswith("--"))
    return long[2:].replace("-", "_")


def _settings(command: click.Command) -> dict[str, click.Option]:
    return {
        _option_key(p): p
        for p in command.params
        if isinstance(p, click.Option) and p.name not in _NOT_SETTINGS
    }


def every_option_from_environment(command: click.Command) -> click.Command:
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "print_config":
            param.envvar = param.envvar or ENV_PREFIX + _option_key(param).upper()
            param.show_envvar = True
    return command


def load_config_file(ctx: click.Context, param: click.Parameter, path: Path | None) -> None:
    if path is None:
        return
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StartupFailed(f"config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StartupFailed(f"config file {path}: not valid TOML: {exc}") from None
    ctx.default_map = {**(ctx.default_map or {}), **_file_defaults(ctx, table, path)}


def _file_defaults(ctx: click.Context, table: Mapping[str, Any], path: Path) -> dict[str, Any]:
    options = _settings(ctx.command)
    defaults: dict[str, Any] = {}
    for key, value in table.items():
        param = options.get(key.replace("-", "_"))
        if param is None:
            raise StartupFailed(f"config file {path}: unknown key {key!r}")
        problem = _type_problem(param, value)
        if problem is None:
            try:
                param.process_value(ctx, value)
            except click.BadParameter as exc:
                problem = exc.message
        if problem is not None:
            raise StartupFailed(f"config file {path}: {key}: {problem}")
        defaults[str(param.name)] = value
    return defaults


def _type_problem(param: click.Option, value: object) -> str | None:
    """What is wrong with the TOML type of ``value`` for ``param``, if anything."""
    if param.multiple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return None
        return "expected a list of strings"
    expected: tuple[type, ...]
    if param.is_flag:
        expected, name = (bool,), "true or false"
    elif isinstance(param.type, click.types.IntParamType):
        expected, name = (int,), "an integer"
    elif isinstance(param.type, click.types.FloatParamType):
        expected, name = (int, float), "a number"
    else:
        expected, name = (str,), "a string"
    if isinstance(value, bool) and bool not in expected:
        return f"expected {name}, not {str(value).lower()}"
    if not isinstance(value, expected):
        return f"expected {name}, not {type(value).__name__}"
    return None


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Enum):
        return _toml(value.value)
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _source(ctx: click.Context, param: click.Option) -> str:
    source = ctx.get_parameter_source(str(param.name))
    if source is ParameterSource.COMMANDLINE:
        return "flag"
    if source is ParameterSource.ENVIRONMENT:
        return f"environment {param.envvar}"
    if source is ParameterSource.DEFAULT_MAP:
        return "config file"
    return "default"


def render_config(ctx: click.Context) -> str:
    """The settings in effect as TOML, each with where it came from; secrets masked."""
    lines = [
        "# freight serve: settings in effect (flag > FREIGHT_* environment > config file > default)"
    ]
    for key, param in _settings(ctx.command).items():
        name = key.replace("_", "-")
        value = ctx.params[str(param.name)]
        origin = _source(ctx, param)
        if value is None:
            lines.append(f"# {name}: not set ({origin})")
        elif key in _SECRETS:
            lines.append(f'# {name} = "***"  # set ({origin}); not shown')
        else:
            lines.append(f"{name} = {_toml(value)}  # {origin}")
    return "\n".join(lines)
