import pytest

from mia.sizes import format_size, parse_size


@pytest.mark.parametrize(
    "text,n",
    [
        ("1k", 1000),
        ("16k", 16000),
        ("1M", 10**6),
        ("100M", 10**8),
        ("2.5k", 2500),
        (500, 500),
        ("500", 500),
        (" 4K ", 4000),
    ],
)
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["ten", "1x", "", "-5", "0", "1.5", "1.0001k", True, "k"])
def test_bad_size_names_the_key(bad):
    with pytest.raises(ValueError, match="data.size"):
        parse_size(bad)


def test_format_size_round_trips():
    for n in (1000, 16000, 10**6, 1234):
        assert parse_size(format_size(n)) == n
