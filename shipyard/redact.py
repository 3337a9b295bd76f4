"""Secret redaction for text that leaves the machine (task logs, error messages).

A `Redactor` replaces three kinds of secrets with `MASK`, in one pass of one compiled regex:

* known secrets: literal strings the agent holds (API secret key, tokens, git passwords),
  also in their URL-quoted form;
* common shapes: the password in URL userinfo (`https://user:pass@host` keeps `user`), the
  credential after `Bearer` / `Authorization: Basic|Token`;
* configured patterns: regular expressions from `agent.redact_patterns`; the whole match is masked.

Literal secrets shorter than `MIN_SECRET_LENGTH` are ignored: masking every "ab" in a log would
destroy it while protecting nothing.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["MASK", "MIN_SECRET_LENGTH", "Redactor", "compile_pattern"]

MASK = "********"
MIN_SECRET_LENGTH = 4

# Each built-in names the group to keep in front of the mask; the rest of the match is masked.
_URL_USERINFO = r"(?P<url_keep>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]+:)[^\s@/]+(?=@)"
_AUTH_HEADER = r"(?P<auth_keep>(?i:\bauthorization)\s*[:=]\s*(?i:basic|bearer|token)\s+)[^\s'\",;]+"
_BEARER = r"(?P<bearer_keep>\bBearer\s+)[A-Za-z0-9\-._~+/]+=*"
_BUILTINS = (("url_keep", _URL_USERINFO), ("auth_keep", _AUTH_HEADER), ("bearer_keep", _BEARER))

_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one configured pattern as it will be used (raises re.error if invalid)."""
    return re.compile(_scoped(pattern))


def _scoped(pattern: str) -> str:
    """Turn a leading global flag group `(?i)x` into a scoped one `(?i:x)`.

    Global flags are only legal at the very start of a whole regex, and a configured pattern
    ends up in the middle of the alternation.
    """
    match = _GLOBAL_FLAGS.match(pattern)
    if match is None:
        return pattern
    return f"(?{match.group(1)}:{pattern[match.end():]})"


class Redactor:
    """Masks known secrets and secret-shaped text. Immutable; cheap to call from many threads."""

    def __init__(self, secrets: Iterable[str | None] = (), patterns: Iterable[str] = ()):
        self._secrets = _literal_forms(secrets)
        self._patterns = tuple(patterns)
        self._regex = self._compile()

    def with_secrets(self, secrets: Iterable[str | None]) -> Redactor:
        """A new redactor that also masks `secrets` (e.g. a token learned at run time)."""
        return Redactor((*self._secrets, *secrets), self._patterns)

    def __call__(self, text: str) -> str:
        return self.redact(text)

    def redact(self, text: str) -> str:
        if not self._might_match(text):
            return text
        return self._regex.sub(_replace, text)

    def _might_match(self, text: str) -> bool:
        """A cheap substring pre-check: the regex has no fixed prefix, so running it costs a try
        at every character, while most log text contains none of what it looks for."""
        if self._patterns:  # configured patterns may match anything
            return True
        if "://" in text or "Bearer" in text or "authorization" in text.lower():
            return True
        return any(secret in text for secret in self._secrets)

    def _compile(self) -> re.Pattern[str]:
        alternatives = [pattern for _, pattern in _BUILTINS]
        if self._secrets:
            alternatives.append("|".join(re.escape(secret) for secret in self._secrets))
        alternatives.extend(f"(?:{_scoped(pattern)})" for pattern in self._patterns)
        return re.compile("|".join(alternatives))


def _literal_forms(secrets: Iterable[str | None]) -> tuple[str, ...]:
    """Distinct secrets plus their URL-quoted forms, longest first so the longest one wins."""
    forms: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            forms.add(secret)
            forms.add(quote(secret, safe=""))
    return tuple(sorted(forms, key=lambda form: (-len(form), form)))


def _replace(match: re.Match[str]) -> str:
    for group, _ in _BUILTINS:
        kept = match.group(group)
        if kept is not None:
            return kept + MASK
    return MASK
