"""One way to refuse a setting: the config key, the value it has, what it must be, and the fix.

Every stage raises `ConfigError`; run.py prints its one line and exits with status 2 (the traceback
stays available with HYDRA_FULL_ERROR=1). A setting inside one config instance of an attack raises
under its own key (`lam`) and is re-raised under the instance's (`attack.wsa_gomez.lam`) with
`under`.
"""

from __future__ import annotations

import inspect
import numbers
import os
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

_UNSET = object()


class ConfigError(ValueError):
    """`key=value: need`, e.g. "train.epochs=0: must be an integer >= 1"; without a value
    (`ConfigError("target.path", need="is not set: ...")`), "key need"."""

    def __init__(self, key: str, value=_UNSET, need: str = ""):
        self.key, self.value, self.need = key, value, need
        if value is not _UNSET:
            message = f"{key}={value!r}: {need}"
        else:  # a message of its own after the key: "=<value> ...", ": ..." or " ..."
            message = key + (need if need[:1] in ("=", ":") else f" {need}")
        super().__init__(message.strip())

    def under(self, prefix: str) -> ConfigError:
        return ConfigError(f"{prefix}.{self.key}", self.value, self.need)


def require(ok: bool, key: str, value, need: str) -> None:
    """Refuse `value` of `key` unless `ok`; `need` says what it must be and how to fix it."""
    if not ok:
        raise ConfigError(key, value, need)


def readable(path, key: str, *, folder: bool, fix: str = "") -> Path:
    """`path`, the value of `key`, refused unless it is an existing file (or folder) this process
    can read: checked when the job is parsed, so that a typo costs seconds, not a generated corpus.
    `fix` says what the key should point at."""
    kind = "folder" if folder else "file"
    p = Path(path)
    if not p.exists():
        why = f"no such {kind}"
    elif folder != p.is_dir():
        why = f"is a {'file' if folder else 'folder'}, not a {kind}"
    elif not os.access(p, os.R_OK | (os.X_OK if folder else 0)):
        why = f"this {kind} is not readable (permissions)"
    else:
        return p
    raise ConfigError(key, str(path), why + (f": {fix}" if fix else ""))


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def build(node, key: str, relative: bool = False, recursive: bool = True, **given):
    """The object a config node's `_target_` names, built by Hydra with plain containers; a setting
    the class does not take, or one it needs and the node lacks, is refused as `<key>.<setting>`.
    A parser that takes its settings as `**settings` (TrainSpec.parse, ShadowSettings.parse) checks
    them itself. With `relative`, the class's own ConfigErrors name keys inside the node and are
    re-raised under `key`. `recursive=False` hands nested nodes over as plain dicts, unbuilt (the
    parser builds them under keys of its own); `given` are arguments that come from other groups,
    already parsed."""
    node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    target = node.get("_target_")
    require(bool(target), key, node, "names no _target_: choose one of its config group's options")
    obj = get_object(target)
    params = _settings(obj)
    if not _checks_itself(obj):
        for name in sorted(set(node) - {"_target_"} - set(params) - set(given)):
            raise ConfigError(
                f"{key}.{name}",
                need=f"is not a setting of {key} (its settings: "
                f"{', '.join(sorted(set(params) - set(given))) or 'none'})",
            )
    for name, p in params.items():
        if p.default is p.empty and name not in node and name not in given:
            raise ConfigError(f"{key}.{name}", need=f"is missing: {key} needs it")
    try:
        if not given:
            return instantiate(node, _convert_="all", _recursive_=recursive)
        # objects of other groups stay out of the config Hydra merges: passed to the parser as they
        # are
        made = instantiate(node, _convert_="all", _recursive_=recursive, _partial_=True)
        return made(**given)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):
            raise (cause.under(key) if relative else cause) from None
        raise
    except ConfigError as err:
        raise (err.under(key) if relative else err) from None


def _checks_itself(obj) -> bool:
    """A parser function or classmethod whose settings arrive as `**settings`."""
    if isinstance(obj, type):
        return False
    params = inspect.signature(obj).parameters.values()
    return any(p.kind is p.VAR_KEYWORD for p in params)


def _settings(cls) -> dict:
    """The keyword settings a class takes, following `**kwargs` up to the base class that takes
    them."""
    found = {}
    for klass in cls.__mro__ if isinstance(cls, type) else [cls]:
        init = klass.__init__ if isinstance(cls, type) else klass
        if isinstance(cls, type) and "__init__" not in vars(klass):
            continue
        params = inspect.signature(init).parameters
        found.update(
            {
                n: p
                for n, p in params.items()
                if n != "self"
                and n not in found
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            }
        )
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    return found
