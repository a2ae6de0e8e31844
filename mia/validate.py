"""One way to refuse a setting: the config key, the value it has, what it must be, and the fix.

Every stage raises `ConfigError`; run.py prints its one line and exits with status 2 (the traceback
stays available with HYDRA_FULL_ERROR=1). A setting inside one config instance of an attack raises
under its own key (`lam`) and is re-raised under the instance's (`attack.wsa_gomez.lam`) with `under`.
"""
from __future__ import annotations

import numbers

_UNSET = object()


class ConfigError(ValueError):
    """`key=value: need`, e.g. "train.epochs=0: must be an integer >= 1"; without a value
    (`ConfigError("target.path", need="is not set: ...")`), "key need"."""

    def __init__(self, key: str, value=_UNSET, need: str = ""):
        self.key, self.value, self.need = key, value, need
        head = key if value is _UNSET else f"{key}={value!r}:"
        super().__init__(f"{head} {need}".strip())

    def under(self, prefix: str) -> "ConfigError":
        return ConfigError(f"{prefix}.{self.key}", self.value, self.need)


def require(ok: bool, key: str, value, need: str) -> None:
    """Refuse `value` of `key` unless `ok`; `need` says what it must be and how to fix it."""
    if not ok:
        raise ConfigError(key, value, need)


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)
