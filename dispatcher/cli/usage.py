"""Click's own usage errors (a bad choice, a missing or unknown option, an unknown command) as
the one red line every other error of the CLI is: the option first, exit code 2.

Typer would draw them in a multi-line Rich box below the usage text, which a script cannot read
and a person has to search for the option. The top-level group runs Click in non-standalone
mode, so the exception reaches us, and prints it the way `common.fail` prints ours.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer

# Typer's own copy of Click (vendored since 0.29): the one whose errors its commands raise.
from typer._click.core import Context
from typer._click.exceptions import (
    BadParameter,
    ClickException,
    MissingParameter,
    NoArgsIsHelpError,
)
from typer.core import TyperArgument, TyperGroup, TyperOption

from dispatcher.cli.common import say_error

_PYDANTIC_PREFIX = "Value error, "  # how Typer's enum conversion words its refusal


class OneLineErrors(TyperGroup):
    """The `outage` group: usage errors in one line, everything else as Typer does it."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except NoArgsIsHelpError as exc:  # the help is printed already
            _leave(standalone_mode, exc, exc.exit_code)
        except ClickException as exc:
            say_error("[bold red]error:[/]", usage_line(exc))
            _leave(standalone_mode, exc, exc.exit_code)
        except typer.Abort as exc:
            say_error("[bold red]error:[/]", "aborted")
            _leave(standalone_mode, exc, 1)
        if not standalone_mode:
            return result
        # Non-standalone Click returns a typer.Exit's code, and the command's value otherwise.
        sys.exit(result if isinstance(result, int) else 0)


def _leave(standalone_mode: bool, exc: Exception, code: int) -> NoReturn:
    if standalone_mode:
        sys.exit(code)
    raise exc


def usage_line(exc: ClickException) -> str:
    """The error as one line that starts with the option (or argument) at fault, when there is
    one, and says where the help is."""
    if isinstance(exc, BadParameter) and exc.param is not None:
        param = exc.param
        if isinstance(param, TyperOption):
            name = max(param.opts, key=len)  # --severity rather than -s
        elif isinstance(param, TyperArgument):
            name = param.display_name_raw  # its metavar: ID
        else:
            name = str(param.name)
        if isinstance(exc, MissingParameter):
            line = f"{name}: missing, and it is required"
        else:
            line = f"{name}: {exc.message.removeprefix(_PYDANTIC_PREFIX)}"
    else:
        line = exc.format_message()
    context = getattr(exc, "ctx", None)
    if isinstance(context, Context):
        line = f"{line} (see `{context.command_path} --help`)"
    return " ".join(line.split())
