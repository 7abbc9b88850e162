"""``Scope``: which links a crawl follows, and the memo of its verdicts."""

from __future__ import annotations

import pytest

from kubecrawl.core.sites import ScopeSpec
from kubecrawl.fetch import scope as scope_module
from kubecrawl.fetch.scope import Scope

SEED = "https://example.com/"


def make(**spec: object) -> Scope:
    return Scope.for_site(SEED, ScopeSpec.model_validate(spec))


def test_filter_normalises_deduplicates_and_keeps_only_in_scope_links() -> None:
    scope = make(include=["/docs/"], exclude=[r"\?print"])
    links = [
        "https://EXAMPLE.com/docs/a#top",
        "https://example.com/docs/a",
        "https://example.com/docs/b?print=1",
        "https://other.org/docs/c",
        "https://example.com/blog/",
        "mailto:someone@example.com",
        "not a url",
    ]
    for _ in range(2):  # the second pass is answered from the memo, and must answer the same
        assert scope.filter(links) == ["https://example.com/docs/a"]


def test_the_memo_keeps_its_newer_half_when_full_and_answers_stay_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scope_module, "_MEMO_SIZE", 4)
    monkeypatch.setattr(scope_module, "_VERDICTS", {})
    scope = make()
    links = [f"https://example.com/{n}" for n in range(10)] + ["https://other.org/"]
    for _ in range(2):
        assert scope.filter(links) == links[:-1]
        assert len(scope_module._VERDICTS) <= 4
    assert list(scope_module._VERDICTS)[-1] == (scope._memo_key, "https://other.org/")  # the newest stays


def test_two_scopes_never_share_a_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scope_module, "_VERDICTS", {})
    narrow = make()
    wide = Scope.for_site(SEED, ScopeSpec.model_validate({"sameHost": False}))
    link = "https://other.org/page"
    assert narrow.admit(link) is None
    assert wide.admit(link) == link
    assert narrow.admit(link) is None


def test_long_links_are_judged_but_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scope_module, "_VERDICTS", {})
    scope = make()
    link = "https://example.com/" + "x" * scope_module._MEMO_URL_LENGTH
    assert scope.admit(link) == link
    assert not scope_module._VERDICTS


def test_links_that_are_not_strings_are_refused() -> None:
    scope = make()
    assert scope.filter([None, 5, ["/a"], {"u": 1}, SEED]) == [SEED]  # type: ignore[list-item]


def test_the_memo_is_not_part_of_a_scopes_identity() -> None:
    scope = make()
    scope.admit("https://example.com/a")
    assert scope == make()
    assert hash(scope) == hash(make())
    assert "_memo_key" not in repr(scope)
