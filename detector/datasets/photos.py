"""Digit-free photographs that come inside well-kept packages: backgrounds and negatives.

Nothing is downloaded. The photographs are scikit-image's sample images (``skimage/data``,
an optional, training-time extra) and matplotlib's ``sample_data/grace_hopper.jpg`` (always
there, as matplotlib is a dependency). Without scikit-image only Grace Hopper is available:
training still works, with fewer photographs, and :func:`photos` of the held-out split says
to ``pip install scikit-image``.

Every image was looked at; those with digits or text large enough to read as a digit are left
out:

- ``page``, ``text``: printed and handwritten text (with digits and digit-like letters);
- ``clock_motion``: a clock face (numerals), motion-blurred;
- ``phantom``: its outer ring is an ellipse outline, a perfect "0" when scaled to a window;
- ``logo``: scikit-image's logo is a big "S"-shaped stroke, which reads as a "5";
- ``motorcycle_right``: the stereo twin of ``motorcycle_left`` (it would leak across the
  split); ``chessboard_GRAY``: the gray twin of ``chessboard_RGB``;
- ``no_time_for_that_tiny.gif``, ``lfw_subset.npy``, the ``.tif`` and ``.npz`` files: an
  animation, 25x25 faces, microscopy stacks, disparity maps, not photographs to crop.

Kept with small lettering (a few pixels tall, letters only, no digits seen): ``astronaut``
(mission patch, name tag), ``grace_hopper`` (name tag "COMO HOPPER"), ``motorcycle_left``
("YAMAHA" on the tank, labels on boxes). Even at the largest crop scale (2x) their letters
stay below the smallest digit a window is trained to find, and letters are background anyway.

The split is fixed. ``held-out`` (7 of 20) is never sampled for training; it measures false
detections on varied photographs the model has not seen: round objects (coins), a cup and a
spoon (coffee), fur and eyes (chelsea), a cluttered garage with windows, shelves and lettering
(motorcycle_left), a lattice with star-shaped lights (rocket), a texture (grass) and
microscopy (ihc). Grace Hopper, the one photograph always present, is in ``train``.
"""
import functools
import os

import cv2
import numpy as np

# name -> (package, file inside the package's data folder)
_SOURCES = {
    "grace_hopper": ("matplotlib", "sample_data/grace_hopper.jpg"),
    **{name: ("skimage", f"{name}.png") for name in (
        "astronaut", "brick", "camera", "cell", "chelsea", "chessboard_RGB", "coffee", "coins",
        "color", "grass", "gravel", "horse", "ihc", "microaneurysms", "moon", "motorcycle_left")},
    **{name: ("skimage", f"{name}.jpg") for name in ("hubble_deep_field", "retina", "rocket")},
}
PHOTOS = tuple(sorted(_SOURCES))
HELD_OUT = ("chelsea", "coffee", "coins", "grass", "ihc", "motorcycle_left", "rocket")
TRAIN = tuple(name for name in PHOTOS if name not in HELD_OUT)
SPLITS = {"train": TRAIN, "held-out": HELD_OUT}


@functools.lru_cache(maxsize=None)
def _data_folder(package):
    """The folder holding ``package``'s sample data, or None when it is not installed."""
    try:
        if package == "matplotlib":
            import matplotlib
            return matplotlib.get_data_path()
        import skimage
        return os.path.join(os.path.dirname(skimage.__file__), "data")
    except ImportError:
        return None


def path(name):
    """The file of photograph ``name``, or None when its package is not installed."""
    if name not in _SOURCES:
        raise ValueError(f"unknown photograph {name!r}; choose from {', '.join(PHOTOS)}")
    package, file = _SOURCES[name]
    folder = _data_folder(package)
    return None if folder is None else os.path.join(folder, file)


def available():
    """The photographs present on this machine (a subset of :data:`PHOTOS`)."""
    return tuple(name for name in PHOTOS if path(name) is not None and os.path.exists(path(name)))


def photos(split):
    """The available photographs of ``split`` ("train" or "held-out"). Raises
    ``RuntimeError`` when none are available (scikit-image missing for "held-out")."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'held-out', got {split!r}")
    present = set(available())
    names = tuple(name for name in SPLITS[split] if name in present)
    if not names:
        raise RuntimeError(f"no {split} photographs are available: they come with scikit-image "
                           "('pip install scikit-image') and matplotlib")
    return names


@functools.lru_cache(maxsize=None)
def load(name, channels=3):
    """Photograph ``name`` as a read-only uint8 array: (H, W) gray for ``channels=1``,
    (H, W, 3) BGR for ``channels=3``. Cached."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    file = path(name)
    if file is None or not os.path.exists(file):
        raise FileNotFoundError(f"photograph {name!r} is not installed (it comes with "
                                f"{_SOURCES[name][0]}: 'pip install scikit-image')")
    # IMREAD_COLOR gives 8-bit BGR for gray, 16-bit and RGBA files alike
    image = cv2.imread(file, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read {file}")
    if channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    image = np.ascontiguousarray(image)
    image.flags.writeable = False
    return image
