"""Folders of images: listing them, and crops labelled by sub-folder (ImageFolder's layout).

A crop folder is ``root/<class>/**/<image>``, one sub-folder per object class and one for
the background (its name configurable, "background" by default), as torchvision's
``ImageFolder`` reads it. Decisions:

- Hidden files and folders (names starting with ".") are ignored; so are files other than
  images (by extension, see ``IMAGE_EXTENSIONS``). Images directly in ``root`` belong to no
  class: they are left out and reported to ``log``.
- Class folders are searched recursively; classes are sorted by name.
- The background folder is optional here (negatives may come from a folder of whole images
  instead; the trainer checks there are some). A folder whose name differs from the
  background's only in case is an error: it would silently become an object class.
- A class folder without images is an error; with ``skip_bad=True`` the class is left out
  and reported to ``log`` (a warning when ``log`` is None).
- Files are not decoded here: an unreadable one is found when it is loaded, and
  :func:`~detector.datasets.annotations.load_image` names it.
"""
import os
import warnings
from dataclasses import dataclass

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class CropFolder:
    """A crop folder's ``classes`` (sorted object classes), the ``background`` name and its
    ``items``: ``(path, class or background name)`` pairs, sorted by class then path."""

    root: str
    classes: list
    background: str
    items: list


def _visible(name):
    return not name.startswith(".")


def is_image(name):
    """Whether ``name`` has an image extension (any case) and is not hidden."""
    return _visible(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _check_folder(folder, what="folder"):
    if not os.path.exists(folder):
        raise FileNotFoundError(f"the {what} {folder} does not exist")
    if not os.path.isdir(folder):
        raise ValueError(f"the {what} {folder} is a file, not a folder")


def _walk(folder):
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if _visible(d)]
        found.extend(os.path.join(parent, f) for f in files if is_image(f))
    return sorted(found)


def list_images(folder):
    """The image files under ``folder`` (recursively, hidden ones left out), as sorted
    absolute paths. A missing folder raises ``FileNotFoundError``, one without images
    ``ValueError``."""
    folder = os.path.abspath(os.fspath(folder))
    _check_folder(folder)
    found = _walk(folder)
    if not found:
        raise ValueError(f"the folder {folder} has no images (files ending in {', '.join(IMAGE_EXTENSIONS)})")
    return found


def read_crop_folder(root, background="background", skip_bad=False, log=None):
    """The :class:`CropFolder` at ``root``; see the module docstring for the rules."""
    root = os.path.abspath(os.fspath(root))
    _check_folder(root, "crop folder")
    entries = sorted(os.listdir(root))
    folders = [e for e in entries if _visible(e) and os.path.isdir(os.path.join(root, e))]
    if not folders:
        raise ValueError(f"the crop folder {root} has no sub-folders: it needs one per class, holding that "
                         f"class's crops, and a {background!r} one for crops without the objects")
    if background not in folders:
        near = [f for f in folders if f.lower() == background.lower()]
        if near:
            raise ValueError(f"the crop folder {root} has a sub-folder {near[0]!r} but the background class is "
                             f"named {background!r}: rename the folder or give background={near[0]!r}")
    notes, items, classes = [], [], []
    loose = [e for e in entries if is_image(e) and os.path.isfile(os.path.join(root, e))]
    if loose:
        notes.append(f"{len(loose)} images directly in {root} (such as {loose[0]!r}) belong to no class")
    for name in folders:
        paths = _walk(os.path.join(root, name))
        if not paths:
            what = "the background folder" if name == background else f"class {name!r}"
            reason = f"{what} ({os.path.join(root, name)}) has no images"
            if not skip_bad:
                raise ValueError(reason)
            notes.append(reason)
            continue
        if name != background:
            classes.append(name)
        items.extend((path, name) for path in paths)
    if not classes:
        raise ValueError(f"the crop folder {root} has no object classes: only "
                         + (f"a {background!r} folder" if background in folders else "empty folders")
                         + "; add one sub-folder of crops per class")
    if notes:
        message = f"{root}: left out " + "; ".join(notes)
        if log is None:
            warnings.warn(message, stacklevel=2)
        else:
            log(message)
    return CropFolder(root, classes, background, items)
