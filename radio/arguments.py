"""The command-line parser of ``radio`` and ``radio/train.py``: options and ``key=value`` overrides in any order.

A plain ``argparse`` parser fills a ``nargs="*"`` positional (the overrides) at the first gap between options,
so ``radio distill -e SPEC --print-config k=v`` used to fail with "unrecognized arguments: k=v".
"""

import argparse
from typing import List

# Set in the namespace by the (sub-)command parser that left arguments unread, so that the error about them
# shows that command's usage (``radio distill ...``), not the top-level ``radio COMMAND ...``.
UNREAD_BY = "_unread_by_parser"
OVERRIDES = "overrides"  # the dest of a command's key=value positional


class IntermixedArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reads options first and positionals from what is left
    (``parse_known_intermixed_args``), wherever they stand on the command line.

    Sub-commands made through ``add_subparsers`` are of this class too, so every ``radio`` command parses
    this way. A parser whose positional is a sub-command choice cannot be parsed intermixed: it parses as
    usual and hands the rest to the chosen sub-command, which does.
    """

    _intermixing = False  # set while parse_known_intermixed_args calls back into parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing or not self._can_intermix():
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            namespace, unread = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        if unread:  # argparse copies a sub-command's namespace into its parent's
            setattr(namespace, UNREAD_BY, self)
        return namespace, unread

    def parse_args(self, args=None, namespace=None):
        namespace, unread = self.parse_known_args(args, namespace)
        parser = vars(namespace).pop(UNREAD_BY, self)
        if unread:
            parser.error(parser.unread_message(unread))
        return namespace

    def unread_message(self, unread: List[str]) -> str:
        """argparse's "unrecognized arguments", and for a command that takes ``key=value`` overrides, how an
        option-like ``--train.max_steps=3`` is written as one."""
        message = f"unrecognized arguments: {' '.join(unread)}"
        takes_overrides = any(action.dest == OVERRIDES for action in self._get_positional_actions())
        dotted = [arg for arg in unread if arg.startswith("-") and "." in arg.split("=", 1)[0]]
        if takes_overrides and dotted:
            written = [_as_override(arg) for arg in dotted]
            message += f"; overrides are written key=value without dashes, e.g. {' '.join(written)}"
        return message

    def _can_intermix(self) -> bool:
        """False where ``parse_known_intermixed_args`` would raise: a sub-command or REMAINDER positional,
        or a positional inside a mutually exclusive group."""
        positionals = self._get_positional_actions()
        if any(action.nargs in (argparse.PARSER, argparse.REMAINDER) for action in positionals):
            return False
        grouped = {action for group in self._mutually_exclusive_groups for action in group._group_actions}
        return not grouped.intersection(positionals)


def _as_override(arg: str) -> str:
    """``--train.max_steps=3`` -> ``train.max_steps=3``; ``--train.max_steps`` -> ``train.max_steps=VALUE``."""
    key, _, value = arg.lstrip("-").partition("=")
    return f"{key}={value or 'VALUE'}"
