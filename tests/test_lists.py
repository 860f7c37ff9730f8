"""coordinator.lists.parse: comma lists to typed lists, and one-line errors that name the flag."""
import pytest

from coordinator.lists import parse


def test_values_come_typed_in_order_with_blanks_skipped():
    assert parse("2, 4,,8,", "--depths") == [2, 4, 8]
    assert parse("0,1.5", "--delays", float, low=0) == [0.0, 1.5]
    assert parse("tcp,ipc,tcp", "--transports", str, choices=("ipc", "tcp")) == ["tcp", "ipc", "tcp"]
    assert parse("", "--windows") == []


SIZES = {"low": 1, "required": True}
TRANSPORTS = {"kind": str, "choices": ("ipc", "tcp")}


@pytest.mark.parametrize("text, flag, options, words", [
    ("2,x", "--depths", {}, "--depths: expected comma-separated integers, got '2,x'"),
    ("1,0", "--sizes", SIZES, "--sizes: expected integers >= 1, got '1,0'"),
    ("", "--sizes", SIZES, "--sizes: expected one or more integers, got ''"),
    ("udp", "--transports", TRANSPORTS, "--transports: expected some of ipc,tcp, got 'udp'"),
    ("", "--transports", TRANSPORTS, "--transports: expected some of ipc,tcp, got ''"),
])
def test_bad_lists_are_one_line_errors_naming_the_flag(text, flag, options, words):
    with pytest.raises(ValueError) as info:
        parse(text, flag, **options)
    assert str(info.value) == words


def test_the_callers_error_class_is_raised():
    class OptionError(ValueError):
        pass
    with pytest.raises(OptionError):
        parse("a", "--hidden", error=OptionError)
