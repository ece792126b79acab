"""Reading the values users type, the same way everywhere: recipe files, ``--set`` overrides and the
evaluator's ``--eps``.

- YAML is read with PyYAML's safe loader (no Python objects are ever built), but with YAML 1.2's float
  rule: PyYAML follows YAML 1.1, where ``1e-3`` and ``5e-4`` (no dot) are strings, so ``optim.lr: 1e-3``
  would be refused as "not a number". YAML 1.2's core schema reads them as floats, as Python and JSON do.
- A number may also be written as a fraction ``N/D`` (``8/255``, the papers' notation for budgets), read as
  :func:`parse_number` reads it. That applies where a number is expected; ``8/255`` stays a string elsewhere.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from .errors import CureZooError

# YAML 1.2 core schema floats (https://yaml.org/spec/1.2.2/#1023-core-schema), plus 1.1's ``1_000.5`` forms
# PyYAML already accepts. Only the float rule changes; ints, bools and nulls are PyYAML's.
_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _SafeLoader12(yaml.SafeLoader):
    """The safe loader with YAML 1.2's float resolution."""


_SafeLoader12.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SafeLoader12.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``1e-3`` is 0.001). Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_SafeLoader12)  # noqa: S506 (a SafeLoader subclass)


def parse_number(text: str | float) -> float:
    """A finite number written as a decimal (``0.031``, ``1e-3``) or a fraction ``N/D`` (``8/255``)."""
    raw = str(text).strip()
    num, slash, den = raw.partition("/")
    try:
        value = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError):
        raise CureZooError(f"cannot read {raw!r} as a number; write a decimal or a fraction, e.g. 8/255") from None
    if not math.isfinite(value):
        raise CureZooError(f"{raw!r} is not a finite number")
    return value
