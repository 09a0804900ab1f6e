"""The three training-data sources behind :func:`detector.datasets.open_data`.

Each gives ``classes`` (the background first), ``background``, ``channels``, ``window``,
``object_size`` (an object's longer side in a positive window, as a fraction of the
window), ``windows(split)``, ``scenes(split)`` (images with boxes and labels),
``mining_scenes(round, count)`` (images with boxes for hard-negative mining) and
``describe()`` (what the checkpoint header records about the data).
"""
import cv2
import numpy as np

from . import WindowSet, photos
from .annotations import load_annotated, load_image, split_by_image
from .folders import list_images
from .windows import negative_windows, positive_windows, random_windows

MINING_PHOTO_SIDES = (320, 480, 640, 960)  # longer sides at which digit-free photographs are mined
NEGATIVE_WINDOWS_PER_IMAGE = 40  # random windows from each image of the negatives folder
NEGATIVES_PER_POSITIVE = 1.0  # background windows cut from annotated images, per object window


def digit_seeds(seed):
    """The digit seeds a training run with ``seed`` uses; other seeds give unseen data.
    Mining round r draws scenes from ``mining + 1000 * r`` on, validation scenes from
    ``validation * 1000`` on."""
    return {"train": 1000 + 2 * seed, "validation": 1001 + 2 * seed, "mining": 300000 + 100000 * seed}


def _negatives_folder(path):
    return "--negatives"


class _Source:
    """What the three sources share: the negatives folder and the mining on it."""

    def __init__(self, channels, window, seed, negatives, log, skip_bad):
        self.channels, self.window, self.seed, self.log, self.skip_bad = channels, window, seed, log, skip_bad
        self.negative_paths = list_images(negatives) if negatives else []
        self.negatives = negatives

    @property
    def classes(self):
        return [self.background, *self.objects]

    def _negative_windows(self, split):
        """Random windows of the negatives folder's images; validation gets a fifth of them."""
        paths = [p for i, p in enumerate(self.negative_paths) if (i % 5 == 4) == (split == "validation")]
        rng = np.random.default_rng([self.seed, 7, split == "validation"])
        return [WindowSet.background(random_windows(image, self.window, rng, NEGATIVE_WINDOWS_PER_IMAGE))
                for _, image in self._loaded(paths, self._load_path, _negatives_folder)]

    def _load_path(self, path):
        return load_image(path, self.channels)

    def _loaded(self, items, load, where):
        """(item, image) for each item whose image loads. A bad one stops training with an
        error saying where it comes from, or with ``skip_bad`` is skipped and counted."""
        skipped = []
        for item in items:
            try:
                image = load(item)
            except ValueError as error:
                if not self.skip_bad:
                    raise ValueError(f"{where(item)}: {error}") from None
                skipped.append(str(error))
                continue
            yield item, image
        if skipped:
            self.log(f"skipped {len(skipped)} unreadable images (--skip-bad): " + "; ".join(skipped[:3]))

    def _negative_scenes(self):
        paths = [p for i, p in enumerate(self.negative_paths) if i % 5 != 4]
        for _, image in self._loaded(paths, self._load_path, _negatives_folder):
            yield image, np.empty((0, 4))

    def describe(self):
        return {"source": self.source, "channels": self.channels, "negatives": self.negatives,
                "negative_images": len(self.negative_paths)}


class DigitData(_Source):
    """The built-in digits (:mod:`.digits`), drawn from seeds derived from ``seed``."""

    source = "digits"
    background = "background"

    def __init__(self, train_size, val_size, **common):
        super().__init__(**common)
        from . import digits

        if tuple(self.window) != (digits.WINDOW, digits.WINDOW):
            raise ValueError(f"the built-in digits are {digits.WINDOW}x{digits.WINDOW} windows, not {self.window}")
        self.digits, self.sizes = digits, {"train": train_size, "validation": val_size}
        self.objects = list(digits.CLASSES[1:])
        self.object_size = float(np.sqrt(np.prod(digits.DIGIT_HEIGHT)))
        self.seeds = digit_seeds(self.seed)

    def windows(self, split):
        x, labels, boxes = self.digits.patches(self.sizes[split], self.seeds[split], channels=self.channels)
        return WindowSet.concat([WindowSet(x, labels, boxes), *self._negative_windows(split)])

    def scenes(self, split):
        """Generated scenes of ``split``'s seeds: one per 100 of its patches, at least 3."""
        for i in range(max(3, self.sizes[split] // 100)):
            image, boxes, labels = self.digits.scene(self.seeds[split] * 1000 + i, channels=self.channels)
            yield image, boxes, labels

    def mining_scenes(self, round_, count):
        """Generated scenes, then every training photograph (digit-free) at a few sizes,
        each turned a different way: anything found there is a false positive."""
        first = self.seeds["mining"] + 1000 * round_
        for seed in range(first, first + count):
            image, boxes, _ = self.digits.scene(seed, channels=self.channels)
            yield image, boxes
        for name in photos.photos("train"):
            photo = photos.load(name, self.channels)
            for turn, side in enumerate(MINING_PHOTO_SIDES):
                scale = side / max(photo.shape[:2])
                size = (max(32, round(photo.shape[1] * scale)), max(32, round(photo.shape[0] * scale)))
                resized = cv2.resize(photo, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
                for flip in (False, True):
                    turned = np.rot90(cv2.flip(resized, 1) if flip else resized, turn + round_)
                    yield np.ascontiguousarray(turned), np.empty((0, 4))
        yield from self._negative_scenes()

    def describe(self):
        return {**super().describe(), "seeds": self.seeds, "sizes": self.sizes,
                "fonts": list(self.digits.FONTS["train"]), "photos": list(photos.photos("train")),
                "render": self.digits.render_versions(), "fingerprint": self.digits.fingerprint()}


class CocoSource(_Source):
    """Images with boxes from a COCO instances JSON, split by image."""

    source = "coco"

    def __init__(self, path, images_dir, background, object_size, val_fraction, windows_per_box, **common):
        super().__init__(**common)
        from .coco import read_coco

        self.coco = read_coco(path, images_dir=images_dir, skip_bad=self.skip_bad, log=self.log)
        if background in self.coco.classes:
            raise ValueError(f"{path}: a category is named {background!r}, the background class's name: "
                             "choose another with --background")
        self.path, self.background, self.objects = path, background, list(self.coco.classes)
        self.object_size, self.windows_per_box = object_size, windows_per_box
        train, validation = split_by_image(self.coco.images, val_fraction, self.seed)
        self.split = {"train": train, "validation": validation}

    def windows(self, split):
        rng = np.random.default_rng([self.seed, 11, split == "validation"])
        index = {name: i for i, name in enumerate(self.classes)}
        sets = []
        for record, image in self._images(self.split[split]):
            if len(record.boxes):
                x, boxes, source = positive_windows(image, record.boxes, self.window, self.object_size, rng,
                                                    per_box=self.windows_per_box)
                labels = np.array([index[record.labels[i]] for i in source], np.int64)
                sets.append(WindowSet(x, labels, boxes))
            n = max(4, int(round(NEGATIVES_PER_POSITIVE * self.windows_per_box * len(record.boxes))))
            sets.append(WindowSet.background(
                negative_windows(image, record.boxes, self.window, self.object_size, rng, n,
                                 ignore_boxes=record.ignore_boxes)))
        return WindowSet.concat(sets + self._negative_windows(split))

    def _images(self, records):
        """(record, image) of each record whose image loads at the size it was labelled at."""
        return self._loaded(records, lambda r: load_annotated(r, self.channels),
                            lambda r: f"{self.path}: image id {r.image_id}")

    def scenes(self, split):
        for record, image in self._images(self.split[split]):
            yield image, record.boxes, np.array(record.labels, str)

    def mining_scenes(self, round_, count):
        for record, image in self._images(self.split["train"]):
            yield image, record.boxes
        yield from self._negative_scenes()

    def describe(self):
        return {**super().describe(), "path": self.path, "images": len(self.coco.images),
                "train_images": len(self.split["train"]), "validation_images": len(self.split["validation"]),
                "boxes": int(sum(len(r.boxes) for r in self.coco.images)),
                "category_ids": self.coco.category_id}


class CropData(_Source):
    """A folder of crops, one sub-folder per class: each crop is an object filling its
    window (its longer side ``object_size`` of the window), split by file."""

    source = "crops"

    def __init__(self, root, background, object_size, val_fraction, **common):
        super().__init__(**common)
        from .folders import read_crop_folder

        self.folder = read_crop_folder(root, background=background, skip_bad=self.skip_bad, log=self.log)
        self.root, self.background, self.objects = root, background, list(self.folder.classes)
        if not any(label == background for _, label in self.folder.items) and not self.negative_paths:
            raise ValueError(f"{root}: no background examples: add a {background!r} sub-folder of crops "
                             "without the objects, or a folder of images with --negatives")
        self.object_size = object_size
        train, validation = split_by_image(self.folder.items, val_fraction, self.seed)
        self.split = {"train": train, "validation": validation}

    def windows(self, split):
        rng = np.random.default_rng([self.seed, 13, split == "validation"])
        index = {name: i for i, name in enumerate(self.classes)}
        sets = []
        for (path, label), image in self._loaded(self.split[split], lambda item: self._load_path(item[0]),
                                                 lambda item: f"{self.root}: class {item[1]!r}"):
            whole = np.array([[0, 0, image.shape[1], image.shape[0]]], np.float64)
            if label == self.background:
                x, _, _ = positive_windows(image, whole, self.window, 1.0, rng, per_box=2)
                sets.append(WindowSet.background(x))
            else:
                x, boxes, _ = positive_windows(image, whole, self.window, self.object_size, rng, per_box=4)
                sets.append(WindowSet(x, np.full(len(x), index[label], np.int64), boxes))
        return WindowSet.concat(sets + self._negative_windows(split))

    def scenes(self, split):
        return iter(())

    def mining_scenes(self, round_, count):
        return self._negative_scenes()

    def describe(self):
        return {**super().describe(), "path": self.root, "crops": len(self.folder.items)}
