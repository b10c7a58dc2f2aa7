import numpy as np
import pytest

from emodan_ros.faces.classes import (
    EDAN3_CLASSES,
    FER2013_CLASSES,
    FERPLUS_CLASSES,
    canonical_name,
    class_mapping,
    map_distribution,
    map_labels,
)


def test_vocabularies():
    assert FERPLUS_CLASSES == ("neutral", "happiness", "surprise", "sadness", "anger",
                               "disgust", "fear", "contempt")
    # fer2013.csv index order: 0 angry 1 disgust 2 fear 3 happy 4 sad 5 surprise 6 neutral
    assert FER2013_CLASSES[0] == "anger" and FER2013_CLASSES[3] == "happiness"
    assert FER2013_CLASSES[6] == "neutral"
    assert EDAN3_CLASSES == ("neutral", "positive", "negative")


def test_aliases():
    assert canonical_name(" Happy ") == "happiness"
    assert canonical_name("angry") == "anger"
    assert canonical_name("sad") == "sadness"
    assert canonical_name("surprised") == "surprise"
    assert canonical_name("contempt") == "contempt"


def test_fer2013_to_ferplus_by_name():
    m = class_mapping(FER2013_CLASSES, FERPLUS_CLASSES)
    assert m.tolist() == [4, 5, 6, 1, 3, 2, 0]
    # and back: contempt has no FER2013 counterpart
    assert class_mapping(FERPLUS_CLASSES, FER2013_CLASSES).tolist() == [6, 3, 5, 4, 0, 1, 2, -1]


def test_folder_names_map_through_aliases():
    assert class_mapping(["happy", "angry", "bored"], FERPLUS_CLASSES).tolist() == [1, 4, -1]


def test_ferplus_to_edan3_groups():
    m = class_mapping(FERPLUS_CLASSES, EDAN3_CLASSES)
    # neutral, happiness, surprise -> neutral, positive, positive; the rest negative
    assert m.tolist() == [0, 1, 1, 2, 2, 2, 2, 2]
    assert class_mapping(["happy", "sad"], EDAN3_CLASSES).tolist() == [1, 2]


def test_map_distribution_sums_into_groups():
    p = np.array([[0.1, 0.2, 0.3, 0.05, 0.05, 0.1, 0.1, 0.1]], dtype=np.float32)
    out = map_distribution(p, FERPLUS_CLASSES, EDAN3_CLASSES)
    np.testing.assert_allclose(out, [[0.1, 0.5, 0.4]], atol=1e-6)
    # dropped mass is not renormalised
    out7 = map_distribution(p[0], FERPLUS_CLASSES, FER2013_CLASSES)
    assert out7.sum() == pytest.approx(0.9)
    with pytest.raises(ValueError):
        map_distribution(p[:, :7], FERPLUS_CLASSES, EDAN3_CLASSES)


def test_map_labels():
    assert map_labels([0, 3, 6, -1], FER2013_CLASSES, FERPLUS_CLASSES).tolist() == [4, 1, 0, -1]
    assert map_labels([7], FERPLUS_CLASSES, FER2013_CLASSES).tolist() == [-1]


def test_alias_collision_is_an_error():
    with pytest.raises(ValueError):
        class_mapping(["happy", "happiness"], FERPLUS_CLASSES)


def test_class_mapping_is_cached_but_each_caller_gets_its_own_copy():
    first = class_mapping(FER2013_CLASSES, FERPLUS_CLASSES)
    first[:] = -1  # a caller scribbling on its answer must not change the next caller's
    again = class_mapping(list(FER2013_CLASSES), list(FERPLUS_CLASSES))  # lists and tuples alike
    assert list(again) == [FERPLUS_CLASSES.index(c) for c in
                           ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")]
