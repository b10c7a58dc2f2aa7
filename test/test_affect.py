"""Valence/arousal from emotion probabilities: signs, name-based lookup, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emodan_ros.faces.affect import CIRCUMPLEX, valence_arousal

FERPLUS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


def one_hot(name: str, names=FERPLUS) -> list[float]:
    return [1.0 if n == name else 0.0 for n in names]


def test_table_covers_ferplus_and_stays_in_unit_disk():
    assert set(CIRCUMPLEX) == set(FERPLUS)
    for v, a in CIRCUMPLEX.values():
        assert -1 <= v <= 1 and -1 <= a <= 1 and math.hypot(v, a) <= 1 + 1e-9


def test_happiness_positive_valence():
    v, a = valence_arousal(one_hot("happiness"), FERPLUS)
    assert v > 0.9 and a > 0


def test_sadness_negative_valence_low_arousal():
    v, a = valence_arousal(one_hot("sadness"), FERPLUS)
    assert v < -0.5 and a < -0.2


def test_surprise_high_arousal():
    arousal = valence_arousal(one_hot("surprise"), FERPLUS)[1]
    assert arousal > 0.8
    others = ("happiness", "sadness", "neutral")
    assert arousal > max(valence_arousal(one_hot(n), FERPLUS)[1] for n in others)


def test_neutral_is_origin():
    assert valence_arousal(one_hot("neutral"), FERPLUS) == pytest.approx((0.0, 0.0), abs=1e-12)


@pytest.mark.parametrize("name", ["anger", "disgust", "fear", "contempt"])
def test_negative_emotions_unpleasant_and_active(name):
    v, a = valence_arousal(one_hot(name), FERPLUS)
    assert v < 0 and a > 0


def test_mixture_is_weighted_mean():
    p = np.zeros(len(FERPLUS))
    p[FERPLUS.index("happiness")] = 0.25
    p[FERPLUS.index("sadness")] = 0.75
    want = 0.25 * np.array(CIRCUMPLEX["happiness"]) + 0.75 * np.array(CIRCUMPLEX["sadness"])
    assert valence_arousal(p, FERPLUS) == pytest.approx(tuple(want))


def test_uniform_distribution_is_inside_disk():
    v, a = valence_arousal(np.full(8, 1 / 8), FERPLUS)
    assert math.hypot(v, a) < 0.6


def test_reordered_and_subset_class_tuples_go_by_name():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(len(FERPLUS)))
    ref = valence_arousal(p, FERPLUS)
    order = rng.permutation(len(FERPLUS))
    assert valence_arousal(p[order], [FERPLUS[i] for i in order]) == pytest.approx(ref)
    fer2013 = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
    assert valence_arousal(one_hot("happiness", fer2013), fer2013) == pytest.approx(
        valence_arousal(one_hot("happiness"), FERPLUS))
    sub = ("sadness", "happiness")
    assert valence_arousal([0.5, 0.5], sub) == pytest.approx(
        tuple(0.5 * np.array(CIRCUMPLEX["sadness"]) + 0.5 * np.array(CIRCUMPLEX["happiness"])))


def test_names_are_trimmed_and_case_insensitive():
    assert valence_arousal([1.0, 0.0], [" Happiness", "SADNESS "]) == pytest.approx(
        CIRCUMPLEX["happiness"])


def test_unnormalised_scores_are_normalised():
    p = np.array([0.0, 3.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert valence_arousal(p, FERPLUS) == pytest.approx(valence_arousal(p / 4.0, FERPLUS))


@pytest.mark.parametrize("probs,names", [
    ([], ()),
    ([], FERPLUS),
    ([math.nan] + [0.1] * 7, FERPLUS),
    ([math.inf] + [0.1] * 7, FERPLUS),
    ([0.0] * 8, FERPLUS),
    ([-0.5, 1.5] + [0.0] * 6, FERPLUS),
    ([0.5, 0.5], FERPLUS),                       # length mismatch
    ([[0.5, 0.5]], ("happiness", "sadness")),    # 2-D
    ([0.5, 0.5], ("happiness", "happiness")),    # duplicate names
    ([0.5, 0.5], ("happiness", "boredom")),      # unknown name
])
def test_bad_input_raises_value_error(probs, names):
    with pytest.raises(ValueError):
        valence_arousal(probs, names)


def test_unknown_classes_can_be_ignored():
    v, a = valence_arousal([0.5, 0.5], ("happiness", "unknown"), ignore_unknown=True)
    assert (v, a) == pytest.approx(CIRCUMPLEX["happiness"])
    with pytest.raises(ValueError):
        valence_arousal([0.0, 1.0], ("happiness", "unknown"), ignore_unknown=True)
