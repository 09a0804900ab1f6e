"""Images with boxes, reading images as the detector does, and a split by image.

An :class:`AnnotatedImage` is one image of a data set: its file, id, size and boxes, each box
``(x0, y0, x1, y1)`` in pixels with ``x1``/``y1`` the right/bottom edges, and one class name
per box. ``ignore_boxes`` hold regions that contain objects but no usable box (COCO's
``iscrowd`` annotations): they are neither positives nor places to cut negatives from.

Images are read as the detector's CLI and server read them: the pixels as stored (EXIF
orientation is not applied), then converted to the model's channels (see :func:`load_image`).
"""
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from .. import images


def _boxes(value):
    boxes = np.array(value, np.float64).reshape(-1, 4) if len(value) else np.zeros((0, 4))
    boxes.flags.writeable = False
    return boxes


@dataclass(frozen=True, eq=False)
class AnnotatedImage:
    """One image and its boxes. Frozen; compared and hashed by identity (it holds arrays)."""

    path: str  # absolute
    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float64, read-only
    labels: tuple  # N class names, one per box
    ignore_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (M, 4): crowds
    ignore_labels: tuple = ()  # M class names

    def __post_init__(self):
        object.__setattr__(self, "boxes", _boxes(self.boxes))
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "ignore_boxes", _boxes(self.ignore_boxes))
        object.__setattr__(self, "ignore_labels", tuple(self.ignore_labels))
        if len(self.labels) != len(self.boxes) or len(self.ignore_labels) != len(self.ignore_boxes):
            raise ValueError(f"{self.path}: {len(self.boxes)} boxes but {len(self.labels)} labels, "
                             f"{len(self.ignore_boxes)} ignore boxes but {len(self.ignore_labels)} labels")


def decode_image(data, name):
    """The array :func:`detector.images.decode` makes of encoded bytes ``data`` (uint8, or
    float in [0, 1] for 16-bit images; gray, BGR or BGRA), or a ``ValueError`` naming ``name``."""
    try:
        return images.decode(data)
    except ValueError as error:
        raise ValueError(f"cannot read an image from {name}: {error}") from None


def image_size(data, name):
    """(width, height) of encoded bytes ``data``, from the header alone."""
    try:
        header = images.read_header(data)
        images.check_pixels(header.width, header.height)
    except ValueError as error:
        raise ValueError(f"cannot read an image from {name}: {error}") from None
    return header.width, header.height


def to_channels(image, channels, name="the image"):
    """A uint8 (H, W) gray image (``channels`` 1) or (H, W, 3) BGR one (``channels`` 3)
    from a gray, BGR or BGRA array of uint8, uint16 (scaled by 1/257) or float in [0, 1]
    (clipped). Alpha is dropped, as the detector drops it."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (BGR), got {channels!r}")
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = np.round(np.clip(np.nan_to_num(image), 0, 1) * 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"{name}: unsupported pixel type {image.dtype} (use 8- or 16-bit images)")
    if image.ndim == 3 and image.shape[2] in (1, 2):  # gray (with alpha)
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 2:
        return np.ascontiguousarray(image) if channels == 1 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: unsupported image shape {image.shape}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if channels == 1 else np.ascontiguousarray(image)


def read_image(path):
    """The image at ``path`` as it is stored (any depth; gray, BGR or BGRA). Unicode paths
    work. A missing or unreadable file raises ``ValueError`` naming the path."""
    path = os.fspath(path)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        raise ValueError(f"cannot read an image from {path}: {error.strerror or error}") from None
    return decode_image(data, path)


def load_image(path, channels):
    """The image at ``path`` (see :func:`read_image`) as uint8 (H, W) for ``channels`` 1 or
    (H, W, 3) BGR for 3."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (BGR), got {channels!r}")
    return to_channels(read_image(path), channels, os.fspath(path))


def load_annotated(item, channels):
    """:func:`load_image` of an :class:`AnnotatedImage`, checked against the size its
    annotations were made for (a mismatch usually means a rotated or replaced file)."""
    image = load_image(item.path, channels)
    if image.shape[:2] != (item.height, item.width):
        raise ValueError(f"{item.path} (image id {item.image_id}) is {image.shape[1]}x{image.shape[0]} "
                         f"(WxH) but its annotations are for {item.width}x{item.height}: was the file "
                         "replaced, or rotated by its EXIF orientation when it was labelled?")
    return image


def _labels_of(item):
    if isinstance(item, AnnotatedImage):
        return item.labels
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):
        return (item[1],)  # a crop folder's (path, class)
    return ()


def split_by_image(items, fraction, seed, labels_of=None):
    """Split ``items`` (images, or any items) into ``(train, validation)`` lists, each in the
    input's order, so that no image is shared: windows are cut after the split.

    ``labels_of(item)`` gives an item's class names (default: an :class:`AnnotatedImage`'s
    labels, the class of a ``(path, class)`` pair, nothing otherwise). The rule:

    1. each item goes to the stratum of its rarest class (fewest items; ties by name); items
       without labels (negatives) form one stratum of their own;
    2. the items are shuffled once (``numpy.random.default_rng(seed)``) and the first
       ``fraction * n`` (rounded half up) of each stratum go to validation, but at least one
       and at most ``n - 1`` when the stratum has ``n >= 2`` items; a lone item trains;
    3. a class left with no training item (its items all went to validation through other,
       rarer classes) gets one back, one whose move leaves every class its validation items
       if there is one;
    4. a class of >= 2 items that has no validation item gets one of its training items
       moved to validation, if every class of that item keeps a training item, else swapped
       with a validation item that gives the class that would lose out a training item back.

    So every class keeps a training item, and a class of >= 2 items has a validation item
    unless no single move or swap can give it one (rare: its items must all be shared with
    classes that have no training item to spare). ``fraction`` 0 gives no validation. The
    same items, order and seed give the same split.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"the validation fraction must lie in [0, 1), got {fraction}")
    items = list(items)
    labels_of = labels_of or _labels_of
    labels = [frozenset(labels_of(item)) for item in items]
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(items))]
    having = {}  # class -> its items, in shuffled order
    for i in order:
        for name in labels[i]:
            having.setdefault(name, []).append(i)
    by_rarity = sorted(having, key=lambda name: (len(having[name]), name))
    rank = {name: r for r, name in enumerate(by_rarity)}
    strata = {}
    for i in order:
        strata.setdefault(min(labels[i], key=rank.get, default=None), []).append(i)
    validation = set()
    if fraction > 0:
        for members in strata.values():
            if len(members) >= 2:
                validation.update(members[:min(len(members) - 1, max(1, int(fraction * len(members) + 0.5)))])
        _balance(validation, labels, having, by_rarity)
    train = [item for i, item in enumerate(items) if i not in validation]
    return train, [item for i, item in enumerate(items) if i in validation]


def _balance(validation, labels, having, by_rarity):
    """Steps 3 and 4 of :func:`split_by_image`, on the set of validation indices, in place."""
    trained = {name: sum(i not in validation for i in members) for name, members in having.items()}
    seen = {name: len(members) - trained[name] for name, members in having.items()}

    def move(to_validation, to_train, check):
        """Move items if every class keeps a training item and no class loses its last
        validation item (when ``check``); say whether they moved."""
        change = {}
        for i, sign in [(i, 1) for i in to_validation] + [(j, -1) for j in to_train]:
            for name in labels[i]:
                change[name] = change.get(name, 0) + sign
        if check and any(trained[n] - d < 1 or (seen[n] and seen[n] + d < 1) for n, d in change.items()):
            return False
        for n, d in change.items():
            trained[n], seen[n] = trained[n] - d, seen[n] + d
        validation.update(to_validation)
        validation.difference_update(to_train)
        return True

    for name in by_rarity:  # a class whose every item went to validation with rarer classes
        if not trained[name]:
            members = having[name]
            any(move([], [j], True) for j in members) or move([], [members[0]], False)
    for name in by_rarity:  # a class without a validation item: move one, or swap one
        if seen[name] or len(having[name]) < 2:
            continue
        for i in having[name]:
            if i in validation:
                continue
            last = [n for n in labels[i] if trained[n] == 1]  # classes that would lose their last training item
            if move([i], [], True) or (last and any(move([i], [j], True) for j in having[last[0]] if j in validation)):
                break
