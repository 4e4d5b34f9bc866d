"""Run a typer app as a console script: every expected failure is one line on stderr, no traceback.

Shared by ``unified-bench`` (:mod:`unified_bench.cli`) and ``uae-reference``
(:mod:`uae_reference.cli`, :mod:`uae_reference.rl.cli`), so that every command of every script
ends the same way:

* exit **0**: done (``--help`` included; :func:`run_app` then returns normally);
* exit **1**: the command ran but reported failures (it raised ``typer.Exit(1)``);
* exit **2**: a usage error (unknown option, missing value, bad value, extra argument, missing
  required option) or one of the project's own :class:`~unified_bench.core.errors.UnifiedBenchError`
  (a configuration or input error). Usage errors print click's own message as the single line
  ``Error: ...`` (with click's ``(Possible options: ...)`` suggestion where it has one); project
  errors print ``error: ...``.

Why this is needed: the apps run with ``standalone_mode=False`` (so that library errors reach
us instead of click's generic handler), which makes click *raise* its usage errors rather than
print them. typer >= 0.2x ships its own copy of click (``typer._click``), whose exceptions are
not subclasses of the ``click`` package's, so catching ``click.ClickException`` never matched
and every usage error escaped as a traceback with exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer

from unified_bench.core.errors import UnifiedBenchError


def _click_exception_types() -> tuple[type[BaseException], ...]:
    """click's ``ClickException`` as typer raises it: typer's vendored copy, the click package, or both."""
    types: list[type[BaseException]] = []
    try:  # typer >= 0.2x: a private copy of click
        from typer._click.exceptions import ClickException as vendored
    except ImportError:
        pass
    else:
        types.append(vendored)
    try:  # older typer: the click package itself
        from click.exceptions import ClickException as packaged
    except ImportError:
        pass
    else:
        if packaged not in types:
            types.append(packaged)
    return tuple(types)


def _is_no_args_help(err: BaseException) -> bool:
    """click >= 8.2 signals ``no_args_is_help`` with a UsageError whose message is the help text."""
    return type(err).__name__ == "NoArgsIsHelpError"


def usage_error_line(err: BaseException) -> str:
    """click's own message for ``err`` as one line: ``Error: <message>``."""
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    return "Error: " + " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def run_app(
    app: typer.Typer,
    args: Sequence[str] | None = None,
    *,
    expected: tuple[type[BaseException], ...] = (),
    prog_name: str | None = None,
) -> None:
    """Run ``app`` on ``args`` (default: ``sys.argv[1:]``); exit with the status described above.

    Returns normally when the command succeeded (exit status 0), so in-process callers and
    tests can tell success from ``SystemExit``.

    ``expected`` adds exception types that are reported like a :class:`UnifiedBenchError`
    (one ``error:`` line, exit 2).
    """
    click_errors = _click_exception_types()
    kwargs: dict[str, Any] = {"args": list(args) if args is not None else None, "standalone_mode": False}
    if prog_name is not None:
        kwargs["prog_name"] = prog_name
    try:
        # Without standalone mode, typer *returns* the code of a raised typer.Exit instead of
        # raising it; dropping it would turn "some samples failed" into 0.
        code = app(**kwargs)
    except (UnifiedBenchError, *expected) as err:
        _fail(f"error: {err}", 2)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except click_errors as err:  # usage errors (exit 2) and click's other user-facing errors
        code = getattr(err, "exit_code", 2)
        if _is_no_args_help(err):  # a bare group command: its help on stderr, exit 2 (click's choice)
            err.show()
            sys.exit(code)
        _fail(usage_error_line(err), code)
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        sys.exit(code)


def _fail(line: str, code: int) -> NoReturn:
    # plain text: a message quotes user input, which must not be read as markup
    typer.echo(line, err=True)
    sys.exit(code)
