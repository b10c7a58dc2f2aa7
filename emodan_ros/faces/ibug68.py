"""Named indices of the 68-point iBUG/300-W landmark scheme, and input validation.

One place for the landmark index conventions used by head pose and ROS4HRI export,
so the two cannot disagree about which eye is which.

Coordinates are 0-based source-image pixels ``(x, y)``, array shape ``(68, 2)``.
"Right"/"left" are the *subject's* right/left: for a face looking at the camera the
subject's right eye (points 36-41) appears on the image's left.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 68

MENTON = 8                  # lowest point of the chin contour
SELLION = 27                # top of the nose bridge, between the eyes
NOSE_TIP = 30               # pronasale
NOSTRIL_RIGHT = 31          # subject's right end of the lower nose contour
SUBNASALE = 33              # lower nose contour, midline
NOSTRIL_LEFT = 35
RIGHT_EYE_OUTER = 36        # exocanthion, subject's right eye
RIGHT_EYE_INNER = 39        # endocanthion, subject's right eye
LEFT_EYE_INNER = 42
LEFT_EYE_OUTER = 45
MOUTH_RIGHT = 48            # cheilion, subject's right mouth corner
MOUTH_LEFT = 54

RIGHT_EYE = tuple(range(36, 42))   # contour of the subject's right eye
LEFT_EYE = tuple(range(42, 48))    # contour of the subject's left eye


def as_landmarks(points: object) -> np.ndarray | None:
    """``(68, 2)`` float64 copy of ``points``, or None when the shape is wrong.

    float64 because cv2.solvePnP and the normalisation maths want it; NaNs are kept
    so that callers can decide per point what a missing landmark means.
    """
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.shape != (NUM_LANDMARKS, 2):
        return None
    return arr.copy()
