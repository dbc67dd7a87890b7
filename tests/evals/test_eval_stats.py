"""The gate's paired tests are exact: known p-values for small samples, ties and zeros handled."""

from __future__ import annotations

import itertools
import random

import pytest

from bastion.evals.stats import sign_test, wilcoxon_signed_rank


def test_all_negative_differences_over_five_epochs_give_one_in_thirty_two() -> None:
    d = [-0.3, -0.2, -0.25, -0.31, -0.1]
    assert wilcoxon_signed_rank(d, "less") == pytest.approx(1 / 32)
    assert sign_test(d, "less") == pytest.approx(1 / 32)
    assert wilcoxon_signed_rank(d, "greater") == pytest.approx(1.0)


def test_wilcoxon_matches_enumeration_of_the_signed_rank_sum() -> None:
    # ranks 1..5, only rank 4 positive: W+ = 4; subsets of {1..5} summing to <= 4 are 7 of 32
    assert wilcoxon_signed_rank([-1, -2, -3, 4, -5], "less") == pytest.approx(7 / 32)
    assert wilcoxon_signed_rank([-1, -2, -3, 4, -5], "two-sided") == pytest.approx(14 / 32)


def test_wilcoxon_exact_with_ties_agrees_with_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(30):
        d = [rng.choice([-0.2, -0.1, 0.1, 0.2, 0.3]) for _ in range(7)]
        mags = sorted(abs(x) for x in d)
        rank = {m: (mags.index(m) + 1 + len(mags) - mags[::-1].index(m)) / 2 for m in mags}
        w = sum(rank[abs(x)] for x in d if x > 0)
        ranks = [rank[abs(x)] for x in d]
        count = sum(
            1
            for signs in itertools.product((0, 1), repeat=len(d))
            if sum(r for r, s in zip(ranks, signs, strict=True) if s) <= w + 1e-9
        )
        assert wilcoxon_signed_rank(d, "less") == pytest.approx(count / 2 ** len(d))


def test_zero_differences_are_dropped_and_no_data_is_no_evidence() -> None:
    assert wilcoxon_signed_rank([0.0, 0.0, -0.1], "less") == pytest.approx(0.5)
    assert wilcoxon_signed_rank([], "less") == 1.0
    assert sign_test([0.0, 0.0], "less") == 1.0


def test_sign_test_is_the_binomial_tail() -> None:
    d = [1, 1] + [-1] * 8
    assert sign_test(d, "less") == pytest.approx((1 + 10 + 45) / 1024)


def test_large_samples_use_a_normal_approximation_in_the_right_direction() -> None:
    d = [-0.1 - 0.001 * i for i in range(80)]
    assert wilcoxon_signed_rank(d, "less") < 1e-6
    assert wilcoxon_signed_rank([x * -1 for x in d], "less") > 0.99
