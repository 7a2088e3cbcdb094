"""The command-line parser of ``radio`` and ``radio/train.py``: options and ``key=value`` overrides in any order.

A plain ``argparse`` parser fills a ``nargs="*"`` positional (the overrides) at the first gap between options,
so ``radio distill -e SPEC --print-config k=v`` used to fail with "unrecognized arguments: k=v".
"""

import argparse


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
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def _can_intermix(self) -> bool:
        """False where ``parse_known_intermixed_args`` would raise: a sub-command or REMAINDER positional,
        or a positional inside a mutually exclusive group."""
        positionals = self._get_positional_actions()
        if any(action.nargs in (argparse.PARSER, argparse.REMAINDER) for action in positionals):
            return False
        grouped = {action for group in self._mutually_exclusive_groups for action in group._group_actions}
        return not grouped.intersection(positionals)
