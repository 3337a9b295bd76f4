import re

import pytest

from shipyard.redact import MASK, Redactor, compile_pattern

SECRETS = ["s3cr3t-key", "gh_pass!word", "tok"]  # "tok" is too short to redact literally


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nothing to hide here", "nothing to hide here"),
        ("key=s3cr3t-key end", f"key={MASK} end"),
        ("twice s3cr3t-key s3cr3t-key", f"twice {MASK} {MASK}"),
        ("git pass gh_pass!word", f"git pass {MASK}"),
        ("quoted gh_pass%21word", f"quoted {MASK}"),
        ("short tok stays", "short tok stays"),
        ("clone https://bob:hunter22@github.com/x/y.git", f"clone https://bob:{MASK}@github.com/x/y.git"),
        ("ssh+git://me:pw@h/", f"ssh+git://me:{MASK}@h/"),
        ("no password https://bob@github.com/x", "no password https://bob@github.com/x"),
        ("plain https://github.com/x:y", "plain https://github.com/x:y"),
        ("Authorization: Bearer abc.def.ghi", f"Authorization: Bearer {MASK}"),
        ("authorization=Basic dXNlcjpwYXNz, next", f"authorization=Basic {MASK}, next"),
        ("header 'Bearer eyJhbGciOi.J9.x=' sent", f"header 'Bearer {MASK}' sent"),
        ("AKIAABCDEFGHIJKLMNOP in env", f"{MASK} in env"),
        ("MY_TOKEN=abc123 and my_token=zz", f"{MASK} and {MASK}"),
        ("", ""),
    ],
)
def test_redaction_table(text, expected):
    redactor = Redactor(SECRETS, patterns=[r"AKIA[0-9A-Z]{16}", r"(?i)my_token=\S+"])
    assert redactor(text) == expected


def test_longest_secret_wins_over_its_prefix():
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.redact("x abcdefgh y") == f"x {MASK} y"


def test_with_secrets_adds_to_existing():
    redactor = Redactor(["first-secret"]).with_secrets(["second-secret", None])
    assert redactor("first-secret second-secret") == f"{MASK} {MASK}"


def test_regex_metacharacters_in_secrets_are_literal():
    redactor = Redactor(["a.b*c+d"])
    assert redactor("a.b*c+d aXbbcd") == f"{MASK} aXbbcd"


def test_user_pattern_groups_do_not_break_builtins():
    redactor = Redactor(patterns=[r"(pass)(word)=(\w+)"])
    assert redactor("password=x https://u:p@h") == f"{MASK} https://u:{MASK}@h"


def test_invalid_pattern_raises_re_error():
    with pytest.raises(re.error):
        Redactor(patterns=["(unclosed"])
    with pytest.raises(re.error):
        compile_pattern("[")


def test_redacts_many_lines_quickly_enough():
    # A throughput smoke check, not a timed assertion: one pass of one regex per line.
    redactor = Redactor(SECRETS, patterns=[r"AKIA[0-9A-Z]{16}"])
    lines = [f"epoch {i} loss 0.{i:04d} https://github.com/org/repo" for i in range(20_000)]
    assert [redactor(line) for line in lines] == lines
