import itertools

from stream.stability import LocalAgreement


def test_words_become_stable_when_two_hypotheses_agree() -> None:
    la = LocalAgreement()
    p1 = la.update("the quick")
    assert p1.stable == "" and p1.unstable == "the quick"
    p2 = la.update("the quick brown fax")
    assert p2.stable == "the quick" and p2.unstable == "brown fax"
    p3 = la.update("the quick brown fox jumps")
    assert p3.stable == "the quick brown"
    assert p3.text == "the quick brown fox jumps"


def test_stable_prefix_is_append_only_even_when_hypothesis_rewrites_it() -> None:
    la = LocalAgreement()
    la.update("I scream for")
    la.update("I scream for ice")
    p = la.update("Ice cream for ice cream")
    assert p.stable.startswith("I scream for")
    stables = [p.stable]
    for hyp in ["Ice cream", "I scream for ice cream today", "I scream for ice cream today now"]:
        stables.append(la.update(hyp).stable)
    for a, b in itertools.pairwise(stables):
        assert b.startswith(a)


def test_case_and_punctuation_do_not_break_agreement() -> None:
    la = LocalAgreement()
    la.update("Hello, world")
    assert la.update("hello world.").stable == "hello world."
