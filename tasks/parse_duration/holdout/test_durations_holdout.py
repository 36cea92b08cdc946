import pytest

from durations import parse_duration


def test_large_numbers():
    assert parse_duration("100h") == 360000
    assert parse_duration("1000000") == 1000000


def test_mixed_separators():
    assert parse_duration("1d 12h") == 129600
    assert parse_duration("\t2h\n5s ") == 7205


@pytest.mark.parametrize("text", ["1h30", "-5s", "1h 1h", "s5", "1 h"])
def test_more_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_cli_uses_it(capsys):
    import cli

    cli.main(["--timeout", "1h30m"])
    assert capsys.readouterr().out.strip() == "timeout: 5400 s"
