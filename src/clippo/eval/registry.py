"""Evaluators by name: what an evaluation set's ``evaluators`` section lists.

An evaluator is a dataclass of its options (validated like every config, ``clippo.schema``)
registered under a name with ``@register("name")``; calling it with an ``EvalContext``
(``clippo.eval.sets``: the model, the set's embeddings computed once, cached training
embeddings) returns ``{metric: value}``. ``needs_texts`` says whether the set's captions must
be embedded too. Adding an evaluator is one file with its registration, imported in
``clippo/eval/__init__.py``.
"""

from __future__ import annotations

from typing import Any

from clippo.schema import ConfigError, build

EVALUATORS: dict[str, type] = {}


def register(name: str):
    """Class decorator: makes the evaluator available under ``name``."""

    def add(cls: type) -> type:
        if name in EVALUATORS:
            raise ValueError(f"evaluator {name!r} is registered twice")
        EVALUATORS[name] = cls
        return cls

    return add


def build_evaluator(name: str, options: dict[str, Any] | None, where: str) -> Any:
    """The evaluator ``name`` with ``options``; errors name the config path ``where``."""
    if name not in EVALUATORS:
        raise ConfigError(f"{where}: unknown evaluator {name!r}; known: {sorted(EVALUATORS)}")
    try:
        return build(EVALUATORS[name], options or {}, f"{where}.{name}")
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}.{name}: {e}") from None
