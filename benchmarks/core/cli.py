"""One command-line convention for the speed benchmarks and the studies (no experiment logic).

A module declares its config dataclass and its presets (at least ``default``; ``quick`` where it
has ``--quick``) in a :class:`ConfigParser`, which adds the flags every command line in
``benchmarks/`` shares:

* ``--preset NAME``: the starting configuration (default ``default``, so a command line without it
  runs as it did before the convention);
* ``--set KEY=VALUE`` (repeatable): any field of the config dataclass, parsed by
  :func:`benchmarks.core.config.apply_overrides` (lists comma-separated, dicts as JSON);
* ``--out-dir DIR`` (plus the module's older names for it, e.g. ``--out``);
* ``--quick``, where a ``quick`` preset exists: the same as ``--preset quick``.

The module's own flags stay, as shorthands for config fields (:meth:`ConfigParser.add_shorthand`).
The config resolves as preset -> ``--set`` -> shorthands -> the module's check; a ``ValueError``
or ``TypeError`` on the way is a usage error: exit status 2 and one line ``prog: error: message``
naming the flag or key and the fix.

>>> from dataclasses import dataclass
>>> @dataclass
... class Config:
...     steps: int = 8
...     quick: bool = False
>>> def check(config):
...     require(config.steps >= 1, "steps", "--steps", "be >= 1", config.steps)
>>> parser = ConfigParser("python -m example", {"default": Config(), "quick": Config(quick=True)}, check=check)
>>> parser.add_shorthand("--steps", field="steps", type=int, help="timed steps")
>>> parser.parse_config(["--quick", "--set", "steps=3"])[1]
Config(steps=3, quick=True)
>>> parser.parse_config(["--set", "steps=3", "--steps", "5"])[1]    # the dedicated flag comes last
Config(steps=5, quick=False)
>>> parser.resolve(parser.parse_args(["--set", "step=3"]))
Traceback (most recent call last):
...
ValueError: unknown config key 'step' in --set step=3; known keys: steps, quick
>>> parser.resolve(parser.parse_args(["--steps", "0"]))
Traceback (most recent call last):
...
ValueError: steps (--steps) must be >= 1, got 0
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, Generic, Mapping, NoReturn, Optional, Sequence, Tuple, TypeVar

from .config import apply_overrides, parse_value

C = TypeVar("C")  # a config dataclass

DEFAULT_PRESET = "default"
QUICK_PRESET = "quick"


class ConfigParser(argparse.ArgumentParser, Generic[C]):
    """An ``argparse`` parser with the convention's flags, resolving to a config of type ``C``.

    ``presets`` maps names to config dataclass instances, ``default_preset`` among them (``None``:
    ``--preset`` is required, as in :mod:`benchmarks.core.framework`); ``check`` validates a
    resolved config (raise ``ValueError`` naming the flag / key and the fix); ``out_dir`` is
    ``--out-dir``'s default (``None``: the module writes no files unless asked) and
    ``out_aliases`` the older names of ``--out-dir`` that keep working.
    """

    def __init__(self, prog: str, presets: Mapping[str, C], *, description: Optional[str] = None,
                 check: Optional[Callable[[C], Any]] = None, default_preset: Optional[str] = DEFAULT_PRESET,
                 preset_help: str = "the starting configuration", out_dir: Optional[Path] = None,
                 out_dir_help: str = "output directory", out_aliases: Sequence[str] = ()) -> None:
        super().__init__(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        if not presets or not all(dataclasses.is_dataclass(c) for c in presets.values()) or (
                default_preset is not None and default_preset not in presets):
            raise TypeError(f"{prog}: presets must map names, {default_preset!r} among them, to config dataclasses")
        self.presets: Dict[str, C] = dict(presets)
        self.default_preset = default_preset
        self.check = check
        #: config field (the argparse dest) -> the flag of each shorthand
        self.shorthands: Dict[str, str] = {}
        keys = ", ".join(f.name for f in dataclasses.fields(next(iter(presets.values()))))
        self.add_argument("--preset", choices=sorted(self.presets), default=None, required=default_preset is None,
                          help=preset_help + (f" (default: {default_preset})" if default_preset else ""))
        if QUICK_PRESET in self.presets:
            self.add_argument("--quick", action="store_true", help=f"the same as --preset {QUICK_PRESET}")
        self.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                          help=f"override a config field (repeatable; lists comma-separated); keys: {keys}")
        self.add_argument("--out-dir", *out_aliases, dest="out_dir", type=Path, default=out_dir,
                          help=out_dir_help + (f" ({', '.join(out_aliases)}: its older name)" if out_aliases else ""))

    def add_shorthand(self, *flags: str, field: str, **kwargs: Any) -> None:
        """Add a flag of the module that sets config field ``field`` (applied after ``--set``);
        ``kwargs`` go to ``add_argument`` (its default is always ``None``: not given)."""
        if field not in {f.name for f in dataclasses.fields(next(iter(self.presets.values())))}:
            raise TypeError(f"{self.prog}: {flags[0]} sets {field!r}, which is not a config field")
        self.add_argument(*flags, dest=field, default=None, **kwargs)
        self.shorthands[field] = flags[0]

    def preset_name(self, args: argparse.Namespace) -> str:
        """The preset asked for: ``--preset``, else ``quick`` with ``--quick``, else the default one."""
        if getattr(args, "quick", False):
            if args.preset not in (None, QUICK_PRESET):
                raise ValueError(f"--quick is --preset {QUICK_PRESET}; it cannot go with --preset {args.preset} "
                                 f"(drop one)")
            return QUICK_PRESET
        name = args.preset or self.default_preset
        if name is None:
            raise ValueError("--preset is required")
        return name

    def resolve(self, args: argparse.Namespace) -> C:
        """The config of parsed ``args``: preset, then ``--set``, then the shorthands, then the
        module's check; raises ``ValueError`` / ``TypeError`` naming the flag or key."""
        config = apply_overrides(self.presets[self.preset_name(args)], args.assignments)
        changes: Dict[str, Any] = {}
        for field, flag in self.shorthands.items():
            value = getattr(args, field)
            if value is None:
                continue
            if isinstance(value, str) and not isinstance(getattr(config, field), str):
                try:  # a string flag for a list / number field: parsed like --set
                    value = parse_value(field, value, type(config))
                except ValueError as error:  # "--set FIELD=ITEM: why" -> "FLAG VALUE: why"
                    message = str(error)
                    if message.startswith(f"--set {field}=") and ": " in message:
                        message = message.split(": ", 1)[1]
                    raise ValueError(f"{flag} {value}: {message}") from None
            elif isinstance(value, (list, tuple)):
                value = list(value)
            elif isinstance(value, Path):
                value = str(value)
            changes[field] = value
        config = dataclasses.replace(config, **changes)
        if self.check is not None:
            self.check(config)
        return config

    def usage_error(self, message: str) -> NoReturn:
        """Exit with status 2 and one line ``prog: error: message``."""
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_config(self, argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, C]:
        """Parse ``argv`` (default ``sys.argv[1:]``) and resolve the config; a usage error exits 2."""
        args = self.parse_args(argv)
        try:
            return args, self.resolve(args)
        except (ValueError, TypeError) as error:
            self.usage_error(str(error))


def require(ok: bool, key: str, flag: Optional[str], rule: str, value: Any) -> None:
    """Unless ``ok``, raise the convention's ``ValueError``: ``KEY (FLAG) must RULE, got VALUE``
    (``flag``: the module's shorthand for ``key``, ``None`` if it has none)."""
    if not ok:
        raise ValueError(f"{key} ({flag or f'--set {key}=...'}) must {rule}, got {value!r}")
