"""YAML read with YAML 1.2's core schema: config files, sweep files and `key=value` overrides alike.

PyYAML implements YAML 1.1, where `8:16` is the base-60 integer 496, `no`/`on`/`yes`/`off` are booleans, `010` is
octal 8, `2001-01-01` is a date and `1e-3` is a string. YAML 1.2 (2009) dropped all of these; its core schema reads
only `null`/`~`/empty as null, `true`/`false` as booleans, decimal, `0o` octal and `0x` hex integers, and floats
(`1e-3`, `.5`, `.inf`, `.nan`). Everything else is a string, so what a user types is what they get.

Files lora-ft writes (a run's config.yaml) go through `dump_yaml`, which quotes any string that either YAML version
would read as something else: they read back the same here and in any YAML 1.1 tool.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# (tag, pattern, first characters) of each implicit type of the core schema (YAML 1.2.2, section 10.3.2).
_CORE_SCHEMA = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    # Not in the core schema, but `<<: *defaults` is how YAML files share a block; nothing else starts with `<<`.
    ("tag:yaml.org,2002:merge", r"^(?:<<)$", ["<"]),
]


class CoreSchemaLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the core schema's implicit types in place of YAML 1.1's."""


CoreSchemaLoader.yaml_implicit_resolvers = {}  # a table of its own: none of SafeLoader's YAML 1.1 patterns
for _tag, _pattern, _first in _CORE_SCHEMA:
    CoreSchemaLoader.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def _construct_int(loader: CoreSchemaLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    try:
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)  # decimal, leading zeros included: 010 is ten
    except ValueError:  # Python refuses integers of more than 4,300 digits
        raise yaml.constructor.ConstructorError(
            None, None, f"the integer {text[:20]}... has {len(text)} digits, too many to read", node.start_mark
        ) from None


CoreSchemaLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


class CompatibleDumper(yaml.SafeDumper):
    """PyYAML's safe dumper that also quotes the strings YAML 1.2 would read as numbers (`1e3`, `0o7`)."""


for _tag, _pattern, _first in _CORE_SCHEMA:
    CompatibleDumper.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def load_yaml(text: str) -> Any:
    """The YAML document in `text`, read with the core schema; raises yaml.YAMLError."""
    return yaml.load(text, Loader=CoreSchemaLoader)


def dump_yaml(data: Any, **kwargs: Any) -> str:
    """`data` as YAML that reads back the same with `load_yaml` and with YAML 1.1 readers."""
    return yaml.dump(data, Dumper=CompatibleDumper, **kwargs)


def yaml_problem(exc: yaml.YAMLError, *, position: bool = True) -> str:
    """PyYAML's multi-line report (a source excerpt and a caret) as one line: 'line L, column C: problem'."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = " ".join(p for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None and position else ""
    return " ".join(f"{where}{problem}".split())
