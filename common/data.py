"""Datasets and loaders for every notebook and the CLI, behind one entry point.

    train_ds, val_ds, num_classes = build_datasets("cifar10", img_size=32, root="data", download=True)
    train_loader, val_loader, num_classes = build_loaders("nearest-color", img_size=32, batch_size=128)

Names (``DATASETS``):

=================== ============================================ =========================================
name                source                                       on disk (``root``)
=================== ============================================ =========================================
pathfinder          embedded, generated (common/synthetic.py)    nothing: generated in memory
pathfinder-colors   embedded, generated                          nothing: generated in memory
nearest-color       embedded, generated (the default)            nothing: generated in memory
cifar10, cifar100   torchvision (``download=True`` fetches)      ``root/cifar-10-batches-py/`` ...
svhn                torchvision (needs scipy to read .mat)       ``root/svhn/{train,test}_32x32.mat``
pets                torchvision OxfordIIITPet                    ``root/oxford-iiit-pet/{images,annotations}``
imagenette          torchvision Imagenette (160/320/full)        ``root/imagenette2-320/{train,val}/<wnid>/``
tiny-imagenet       its own layout (val_annotations.txt)         ``root/tiny-imagenet-200/...``
aid, rld            ``ImageFolder``                              ``root/AID/<class>/*.jpg`` (or train/ val/)
fashion-mnist       Zalando's idx files (real 28x28 photos)      ``root/FashionMNIST/raw/*-ubyte[.gz]``, or
                    ``apt-get install dataset-fashion-mnist``    ``/usr/share/datasets/fashion-mnist/``
=================== ============================================ =========================================

``fashion-mnist`` is the real dataset that works offline: 60,000 + 10,000 grey 28x28 product photos in 10
classes (MIT licence). It is read from the original idx files, whichever of these exists first: ``root/
FashionMNIST/raw/`` (where ``download=True`` puts them, through torchvision) or Debian's package
``dataset-fashion-mnist`` (30 MB, no other download). The images reach the model as 3-channel 32x32 (zero
padding of 2 pixels, the grey channel repeated; another ``img_size`` resizes after padding).

Augmentation recipes (torchvision transforms v2), chosen with ``augment=``:

* ``"paper"``: what LKCA's and most small-dataset ViT papers use: random crop (padding 4 at 32 px; random
  resized crop for larger images), horizontal flip (not for SVHN: digits), AutoAugment with the dataset's
  policy (CIFAR10, SVHN or IMAGENET), and RandomErasing (p=0.25). MixUp/CutMix are batch-level and live in
  the training loop (``TrainConfig.mixup`` / ``cutmix``), because they mix labels too.
* ``"basic"``: crop + flip only.  ``"none"``: resize/normalise only (validation always uses this).

The embedded datasets are never augmented: flipping or cropping would not change their labels but would
move markers off the image.

A dataset that is missing and not downloadable raises ``DatasetNotFoundError`` (a ``FileNotFoundError``
*and* a ``ValueError``) naming the folder layout expected and where to get the data.
"""
from __future__ import annotations

import difflib
import os
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from common.synthetic import SyntheticLongRange

DEFAULT_DATASET = "nearest-color"
EMBEDDED = ("pathfinder", "pathfinder-colors", "nearest-color")
REAL = ("fashion-mnist", "cifar10", "cifar100", "svhn", "pets", "imagenette", "tiny-imagenet", "aid", "rld")
# Real datasets held in memory as one tensor (no decoding): data-loader workers would only add overhead.
IN_MEMORY = ("fashion-mnist",)
DATASETS = EMBEDDED + REAL

# Native image size and class count of each dataset (img_size=None means the native size).
NATIVE_SIZE = {"fashion-mnist": 32, "pathfinder": 32, "pathfinder-colors": 32, "nearest-color": 32, "cifar10": 32, "cifar100": 32, "svhn": 32,
               "pets": 224, "imagenette": 224, "tiny-imagenet": 64, "aid": 299, "rld": 224}
MEAN_STD = {"fashion-mnist": ((0.2860,) * 3, (0.3530,) * 3),  # of the 28x28 training images
            "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
            "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
            "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))}
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# Where to get each real dataset, and the layout we expect (used in the error messages).
WHERE = {
    "fashion-mnist": ("`apt-get install dataset-fashion-mnist` (Debian/Ubuntu: 30 MB, offline mirror of the idx "
                      "files, installs to /usr/share/datasets/fashion-mnist/), or download=True / --download "
                      "(torchvision fetches them from Zalando's server)",
                      "ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar.html (or pass download=True / --download)",
                "ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar.html (or download=True / --download)",
                 "ROOT/cifar-100-python/{train, test, meta}"),
    "svhn": ("http://ufldl.stanford.edu/housenumbers/ (or download=True / --download)",
             "ROOT/svhn/{train_32x32.mat, test_32x32.mat}"),
    "pets": ("https://www.robots.ox.ac.uk/~vgg/data/pets/ (or download=True / --download)",
             "ROOT/oxford-iiit-pet/{images/*.jpg, annotations/{trainval.txt,test.txt}}"),
    "imagenette": ("https://github.com/fastai/imagenette (or download=True / --download)",
                   "ROOT/imagenette2-320/{train,val}/<wnid>/*.JPEG (or imagenette2-160 / imagenette2)"),
    "tiny-imagenet": ("http://cs231n.stanford.edu/tiny-imagenet-200.zip (unzip it into ROOT)",
                      "ROOT/tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, "
                      "val/images/*.JPEG, val/val_annotations.txt}"),
    "aid": ("https://captain-whu.github.io/AID/ (30 aerial scene classes; unpack it into ROOT/AID)",
            "ROOT/AID/<class>/*.jpg, or ROOT/AID/train/<class>/*.jpg and ROOT/AID/val/<class>/*.jpg"),
    "rld": ("the RLD dataset used by iiANET (unpack it into ROOT/RLD)",
            "ROOT/RLD/<class>/*.jpg, or ROOT/RLD/train/<class>/*.jpg and ROOT/RLD/val/<class>/*.jpg"),
}


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset is not on disk (and was not, or cannot be, downloaded)."""


def _not_found(name: str, root: str, extra: str = "") -> DatasetNotFoundError:
    where, layout = WHERE[name]
    return DatasetNotFoundError(
        f"dataset {name!r} not found under root={root!r}{extra}.\n"
        f"  expected layout: {layout.replace('ROOT', root)}\n"
        f"  get it from:     {where}\n"
        f"  or train offline on the embedded dataset: --data {DEFAULT_DATASET}")


def check_name(name: str) -> str:
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Valid names: {', '.join(DATASETS)}")
    return key


# --------------------------------------------------------------------------------------------------------
# Transforms (torchvision.transforms.v2)
# --------------------------------------------------------------------------------------------------------
def build_transforms(name: str, img_size: int, train: bool, augment: str = "paper") -> Callable:
    """The train or eval transform for a real dataset, as a v2.Compose taking a PIL image."""
    from torchvision.transforms import v2

    if augment not in {"paper", "basic", "none"}:
        raise ValueError(f"augment must be 'paper', 'basic' or 'none', got {augment!r}")
    mean, std = MEAN_STD.get(name, IMAGENET_MEAN_STD)
    small = NATIVE_SIZE[name] <= 64                     # CIFAR/SVHN/Tiny-ImageNet: pad-and-crop recipe
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if not train or augment == "none":
        if small:
            resize = [v2.Resize(img_size, antialias=True)] if img_size != NATIVE_SIZE[name] else []
        else:  # the usual eval crop: resize the short side to img/0.875, centre-crop img
            resize = [v2.Resize(int(round(img_size / 0.875)), antialias=True), v2.CenterCrop(img_size)]
        return v2.Compose(resize + to_tensor)

    ops = []
    if small:
        if img_size != NATIVE_SIZE[name]:
            ops.append(v2.Resize(img_size, antialias=True))
        ops.append(v2.RandomCrop(img_size, padding=img_size // 8))
    else:
        ops.append(v2.RandomResizedCrop(img_size, scale=(0.08, 1.0), antialias=True))
    if name != "svhn":                                  # flipping digits changes what they are
        ops.append(v2.RandomHorizontalFlip())
    if augment == "paper":
        policy = {"cifar10": v2.AutoAugmentPolicy.CIFAR10, "cifar100": v2.AutoAugmentPolicy.CIFAR10,
                  "svhn": v2.AutoAugmentPolicy.SVHN}.get(name, v2.AutoAugmentPolicy.IMAGENET)
        ops.append(v2.AutoAugment(policy))
    ops += to_tensor
    if augment == "paper":
        ops.append(v2.RandomErasing(p=0.25))
    return v2.Compose(ops)


# --------------------------------------------------------------------------------------------------------
# Real datasets
# --------------------------------------------------------------------------------------------------------
class TinyImageNet(Dataset):
    """Tiny-ImageNet-200 in its own layout: train/<wnid>/images/*.JPEG; val/images + val_annotations.txt.

    (torchvision has no loader for it, and ImageFolder cannot read its validation split, whose labels are
    in a text file rather than in folder names.)
    """

    def __init__(self, root: str, split: str = "train", transform=None):
        from PIL import Image  # noqa: F401  (pillow comes with torchvision)

        self.root, self.transform = root, transform
        wnids_file = os.path.join(root, "wnids.txt")
        train_dir = os.path.join(root, "train")
        if os.path.exists(wnids_file):
            with open(wnids_file) as f:
                self.classes = [w.strip() for w in f if w.strip()]
        elif os.path.isdir(train_dir):
            self.classes = sorted(os.listdir(train_dir))
        else:
            raise _not_found("tiny-imagenet", os.path.dirname(root) or ".", f" (looked in {root!r})")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        if split == "train":
            for wnid in self.classes:
                d = os.path.join(train_dir, wnid, "images")
                if not os.path.isdir(d):
                    raise _not_found("tiny-imagenet", os.path.dirname(root) or ".", f" (missing {d!r})")
                self.samples += [(os.path.join(d, f), self.class_to_idx[wnid]) for f in sorted(os.listdir(d))]
        elif split == "val":
            ann = os.path.join(root, "val", "val_annotations.txt")
            if not os.path.exists(ann):
                raise _not_found("tiny-imagenet", os.path.dirname(root) or ".", f" (missing {ann!r})")
            with open(ann) as f:
                for line in f:
                    parts = line.strip().split("\t")
                    if len(parts) >= 2:
                        self.samples.append((os.path.join(root, "val", "images", parts[0]),
                                             self.class_to_idx[parts[1]]))
        else:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, target = self.samples[i]
        img = Image.open(path).convert("RGB")
        return (self.transform(img) if self.transform else img), target


def _torchvision_cifar(cls):
    """CIFAR loaders that check the files exist instead of their md5 (torchvision still checks the md5 of a
    download). This lets the tests exercise the real on-disk format with small generated batches."""

    class _C(cls):
        def _check_integrity(self) -> bool:  # noqa: D401
            base = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(base, f)) for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            if not os.path.isfile(path):
                raise RuntimeError("Dataset metadata file not found or corrupted. You can use download=True")
            import pickle

            with open(path, "rb") as f:
                meta = pickle.load(f, encoding="latin1")
            self.classes = meta[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    _C.__name__ = cls.__name__
    return _C


# Fashion-MNIST: the original idx files, read directly ------------------------------------------------------
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_SYSTEM_DIRS = ["/usr/share/datasets/fashion-mnist"]   # Debian's dataset-fashion-mnist
_IDX_DTYPES = {0x08: torch.uint8, 0x09: torch.int8, 0x0B: torch.int16, 0x0C: torch.int32,
               0x0D: torch.float32, 0x0E: torch.float64}


def read_idx(path: str) -> torch.Tensor:
    """Read one idx file (plain or .gz): the format of MNIST and Fashion-MNIST.

    Layout: 2 zero bytes, a dtype code, the number of dimensions n, then n big-endian uint32 sizes, then the
    data, big-endian, row-major."""
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path!r} is not an idx file (expected 2 zero bytes and a dtype code, "
                         f"got {raw[:4]!r}); re-download it")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = bytearray(raw[4 + 4 * ndim:])
    count = 1
    for n in shape:
        count *= n
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(data) != count * itemsize:
        raise ValueError(f"{path!r} is truncated or corrupt: header says {shape} ({count * itemsize} bytes), "
                         f"found {len(data)} bytes; re-download it")
    t = torch.frombuffer(data, dtype=torch.uint8).view(dtype) if count else torch.empty(0, dtype=dtype)
    if itemsize > 1:                                   # idx is big-endian; torch uses the machine's order
        import sys

        if sys.byteorder == "little":
            t = t.view(torch.uint8).view(-1, itemsize).flip(1).reshape(-1).view(dtype)
    return t.reshape(shape)


def find_fashion_mnist(root: str) -> Optional[str]:
    """The first folder holding all four Fashion-MNIST idx files (plain or .gz), or None."""
    for d in [os.path.join(root, "FashionMNIST", "raw")] + FASHION_SYSTEM_DIRS:
        if all(os.path.exists(os.path.join(d, f)) or os.path.exists(os.path.join(d, f + ".gz"))
               for pair in FASHION_FILES.values() for f in pair):
            return d
    return None


class FashionMNIST(Dataset):
    """Fashion-MNIST from its idx files, held in memory as uint8 (70,000 x 32 x 32: 72 MB).

    Each image is padded from 28x28 to 32x32 with zeros (the background is black) once, at load time; per
    sample the grey channel is repeated to 3 channels and ``transform`` (a v2 transform on a float tensor in
    [0, 1]) is applied."""

    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]

    def __init__(self, folder: str, split: str = "train", transform=None):
        if split not in FASHION_FILES:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")

        def path(f):
            return os.path.join(folder, f) if os.path.exists(os.path.join(folder, f)) else os.path.join(folder, f + ".gz")

        images, labels = (read_idx(path(f)) for f in FASHION_FILES[split])
        if images.dim() != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise ValueError(f"Fashion-MNIST files in {folder!r} have unexpected shapes {tuple(images.shape)} and "
                             f"{tuple(labels.shape)} (expected (N, 28, 28) and (N,)); re-download them")
        self.images = torch.nn.functional.pad(images, (2, 2, 2, 2))      # (N, 32, 32) uint8
        self.targets = labels.long().tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i].float().div_(255).unsqueeze(0).expand(3, -1, -1)   # (3, 32, 32) in [0, 1]
        return (self.transform(x) if self.transform else x), self.targets[i]


def _fashion_mnist(img_size, root, download, augment):
    """(train, val, 10) for Fashion-MNIST; crop (padding 4) + flip (+ RandomErasing for "paper") on train."""
    from torchvision.transforms import v2

    if augment not in {"paper", "basic", "none"}:
        raise ValueError(f"augment must be 'paper', 'basic' or 'none', got {augment!r}")
    folder = find_fashion_mnist(root)
    if folder is None and download:
        import torchvision.datasets as tvd

        tvd.FashionMNIST(root, train=True, download=True)    # writes ROOT/FashionMNIST/raw/*-ubyte
        tvd.FashionMNIST(root, train=False, download=True)
        folder = find_fashion_mnist(root)
    if folder is None:
        raise _not_found("fashion-mnist", root, f" nor in {', '.join(FASHION_SYSTEM_DIRS)}")
    mean, std = MEAN_STD["fashion-mnist"]
    resize = [v2.Resize(img_size, antialias=True)] if img_size != 32 else []
    t_val = v2.Compose(resize + [v2.Normalize(mean, std)])
    ops = list(resize)
    if augment != "none":
        # AutoAugment's policies are for colour photos; grey product photos get crop + flip.
        ops += [v2.RandomCrop(img_size, padding=img_size // 8), v2.RandomHorizontalFlip()]
    ops.append(v2.Normalize(mean, std))
    if augment == "paper":
        ops.append(v2.RandomErasing(p=0.25))
    return FashionMNIST(folder, "train", v2.Compose(ops)), FashionMNIST(folder, "val", t_val), 10


def _split_folder(ds, val_fraction: float, seed: int):
    """Deterministic stratified-ish split of one ImageFolder into train/val index lists."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(ds), generator=g).tolist()
    n_val = max(1, int(round(len(ds) * val_fraction)))
    return sorted(perm[n_val:]), sorted(perm[:n_val])


class _Transformed(Dataset):
    """A view of a dataset with its own transform (train and val of one ImageFolder need different ones)."""

    def __init__(self, base, indices, transform):
        self.base, self.indices, self.transform = base, indices, transform
        self.targets = [base.targets[i] for i in indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        img, target = self.base[self.indices[i]]
        return self.transform(img), target


def _real_datasets(name, img_size, root, download, augment, seed):
    import torchvision.datasets as tvd

    if name == "fashion-mnist":
        return _fashion_mnist(img_size, root, download, augment)
    t_train = build_transforms(name, img_size, True, augment)
    t_val = build_transforms(name, img_size, False, augment)
    try:
        if name in ("cifar10", "cifar100"):
            cls = _torchvision_cifar(tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100)
            tr = cls(root, train=True, transform=t_train, download=download)
            va = cls(root, train=False, transform=t_val, download=download)
            return tr, va, len(tr.classes)
        if name == "svhn":
            try:
                import scipy.io  # noqa: F401
            except ImportError as e:
                raise ImportError("SVHN is stored as .mat files: `pip install scipy` to read it") from e
            d = os.path.join(root, "svhn")
            return (tvd.SVHN(d, split="train", transform=t_train, download=download),
                    tvd.SVHN(d, split="test", transform=t_val, download=download), 10)
        if name == "pets":
            tr = tvd.OxfordIIITPet(root, split="trainval", transform=t_train, download=download)
            va = tvd.OxfordIIITPet(root, split="test", transform=t_val, download=download)
            return tr, va, len(tr.classes)
        if name == "imagenette":
            # Prefer an existing copy at any of the three sizes; download the 320 px version by default.
            for size in ("320px", "160px", "full"):
                folder = {"320px": "imagenette2-320", "160px": "imagenette2-160", "full": "imagenette2"}[size]
                if os.path.isdir(os.path.join(root, folder)):
                    break
            else:
                size = "320px"
            tr = tvd.Imagenette(root, split="train", size=size, transform=t_train, download=download)
            va = tvd.Imagenette(root, split="val", size=size, transform=t_val, download=download)
            return tr, va, len(tr.classes)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        if "not found" in str(e).lower() or "download" in str(e).lower():
            raise _not_found(name, root) from e
        raise
    if name == "tiny-imagenet":
        base = root if os.path.exists(os.path.join(root, "wnids.txt")) else os.path.join(root, "tiny-imagenet-200")
        if download:
            raise _not_found(name, root, " (torchvision cannot download Tiny-ImageNet)")
        if not os.path.isdir(base):
            raise _not_found(name, root)
        tr, va = TinyImageNet(base, "train", t_train), TinyImageNet(base, "val", t_val)
        return tr, va, len(tr.classes)
    if name in ("aid", "rld"):
        base = root if os.path.basename(os.path.normpath(root)).lower() == name else os.path.join(root, name.upper())
        if not os.path.isdir(base):
            raise _not_found(name, root)
        if os.path.isdir(os.path.join(base, "train")) and os.path.isdir(os.path.join(base, "val")):
            tr = tvd.ImageFolder(os.path.join(base, "train"), transform=t_train)
            va = tvd.ImageFolder(os.path.join(base, "val"), transform=t_val)
            return tr, va, len(tr.classes)
        full = tvd.ImageFolder(base)                 # one folder of classes: split it 80/20, reproducibly
        tr_idx, va_idx = _split_folder(full, 0.2, seed)
        return _Transformed(full, tr_idx, t_train), _Transformed(full, va_idx, t_val), len(full.classes)
    raise AssertionError(name)


# --------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------
def build_datasets(name: str = DEFAULT_DATASET, img_size: Optional[int] = None, root: str = "data",
                   download: bool = False, smoke: bool = False, train_size: Optional[int] = None,
                   val_size: Optional[int] = None, seed: int = 0, augment: str = "paper",
                   num_classes: Optional[int] = None, difficulty: float = 0.0):
    """Build (train_ds, val_ds, num_classes).

    Args:
        name: one of ``DATASETS``.
        img_size: side length fed to the model (default: the dataset's native size).
        root: where real datasets live (and are downloaded to).
        download: let torchvision download a missing dataset (needs the internet).
        smoke: tiny sizes for CI (64 train / 32 val images).
        train_size, val_size: subsample (real datasets: a fixed random subset) or set the number of
            generated images (embedded datasets; defaults 5000 / 1000).
        augment: "paper", "basic" or "none" (real datasets only).
        num_classes, difficulty: options of the embedded tasks (see common/synthetic.py).
    """
    name = check_name(name)
    img_size = img_size or NATIVE_SIZE[name]
    if not isinstance(img_size, int) or img_size < 16:
        raise ValueError(f"img_size must be an int >= 16, got {img_size!r}")
    if smoke:
        train_size, val_size = min(train_size or 64, 64), min(val_size or 32, 32)
    if name in EMBEDDED:
        task_kw = dict(img_size=img_size, num_classes=num_classes, difficulty=difficulty, seed=seed)
        tr = SyntheticLongRange(name, "train", train_size or 5000, **task_kw)
        va = SyntheticLongRange(name, "val", val_size or 1000, **task_kw)
        return tr, va, tr.num_classes
    tr, va, n_cls = _real_datasets(name, img_size, root, download, augment, seed)
    g = torch.Generator().manual_seed(seed)
    if train_size and train_size < len(tr):
        tr = Subset(tr, torch.randperm(len(tr), generator=g)[:train_size].tolist())
    if val_size and val_size < len(va):
        va = Subset(va, torch.randperm(len(va), generator=g)[:val_size].tolist())
    return tr, va, n_cls


def build_loaders(name: str = DEFAULT_DATASET, img_size: Optional[int] = None, batch_size: int = 128,
                  num_workers: Optional[int] = None, seed: int = 0, **kwargs):
    """Build (train_loader, val_loader, num_classes); kwargs go to ``build_datasets``."""
    tr, va, n_cls = build_datasets(name, img_size=img_size, seed=seed, **kwargs)
    if num_workers is None:  # generated data is already in memory; decoding JPEGs wants workers
        num_workers = 0 if check_name(name) in EMBEDDED + IN_MEMORY else min(8, os.cpu_count() or 1)
    g = torch.Generator().manual_seed(seed)
    common = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                  persistent_workers=num_workers > 0)
    train_loader = DataLoader(tr, batch_size=batch_size, shuffle=True, drop_last=len(tr) > batch_size,
                              generator=g, **common)
    val_loader = DataLoader(va, batch_size=batch_size * 2, shuffle=False, **common)
    return train_loader, val_loader, n_cls
