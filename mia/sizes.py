"""Dataset sizes written the way researchers say them: 1k, 10k, 1M, 100M."""

import re

from mia.validate import ConfigError

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMbB]?)\s*$")


def parse_size(value, key: str = "data.size", minimum: int = 1) -> int:
    """'16k' -> 16000, '1M' -> 1000000, 500 -> 500; anything else is a ConfigError naming `key`."""
    if isinstance(value, bool):
        raise ConfigError(
            key, need=f"={value!r} is not a size; use an integer or 1k / 10k / 1M / 100M"
        )
    if isinstance(value, int):
        n = value
    else:
        m = _PATTERN.match(str(value))
        if not m:
            raise ConfigError(
                key, need=f"={value!r} is not a size; use an integer or 1k / 10k / 1M / 100M"
            )
        n = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
        if n != int(n):
            raise ConfigError(key, need=f"={value!r} is not a whole number of samples")
        n = int(n)
    if n < minimum:
        raise ConfigError(
            key, need=f"={value!r} must be {'positive' if minimum == 1 else f'at least {minimum}'}"
        )
    return n


def format_size(n: int) -> str:
    for suffix, unit in (("M", 10**6), ("k", 10**3)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
