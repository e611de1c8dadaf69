"""Small files in real datasets' on-disk formats, for tests that must not download anything.

    write_cifar(root)        root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
                             (n_classes=100: root/cifar-100-python/{train, test, meta})
    write_pets(root)         root/oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt}
    write_imagenette(root)   root/imagenette2-320/{train,val}/<wnid>/*.JPEG
    write_sitecustomize(dir, fixture_root)   see its docstring (for notebook kernels)

The layouts are the ones torchvision's loaders parse (CIFAR10, OxfordIIITPet, Imagenette; checked against
their sources in torchvision 0.29), with real class names / WordNet ids, and a few tiny images per class.
The images are noise: these files prove that the code paths run, not that anything learns.
"""
import os
import pickle

import numpy as np


# CIFAR-10 -----------------------------------------------------------------------------------------------
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root, n_classes=10, per_batch=8):
    """CIFAR's python pickles. CIFAR-10: cifar-10-batches-py/{data_batch_1..5, test_batch} holding
    {"data": (n, 3072) uint8, "labels": [n ints]} and batches.meta {"label_names": [...]}; CIFAR-100
    (n_classes=100): cifar-100-python/{train, test} with "fine_labels" and meta {"fine_label_names": [...]}.
    torchvision checks md5 sums that these files cannot match: see ``skip_cifar_md5`` (in-process) and
    ``write_sitecustomize`` (for a subprocess)."""
    if n_classes == 10:
        base, files = os.path.join(root, "cifar-10-batches-py"), [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        key, meta, meta_key, names = "labels", "batches.meta", "label_names", CIFAR10_NAMES
    else:
        base, files = os.path.join(root, "cifar-100-python"), ["train", "test"]
        key, meta, meta_key, names = "fine_labels", "meta", "fine_label_names", [f"class{i}" for i in range(n_classes)]
    os.makedirs(base)
    rng = np.random.default_rng(0)
    for f in files:
        with open(os.path.join(base, f), "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                         key: rng.integers(0, n_classes, per_batch).tolist()}, fh)
    with open(os.path.join(base, meta), "wb") as fh:
        pickle.dump({meta_key: names}, fh)


def skip_cifar_md5(patch=setattr):
    """torchvision checks CIFAR's md5 sums; our generated files only need to exist. Patches CIFAR-10 (and so
    CIFAR-100) in this process with ``patch(cls, name, value)``: plain ``setattr`` (a worker process), or a pytest
    ``monkeypatch.setattr`` (undone after the test)."""
    import torchvision.datasets as tvd

    def files_exist(self):
        base = os.path.join(self.root, self.base_folder)
        return all(os.path.isfile(os.path.join(base, f)) for f, _ in self.train_list + self.test_list)

    def load_meta(self):
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    patch(tvd.CIFAR10, "_check_integrity", files_exist)     # CIFAR100 subclasses CIFAR10: patched too
    patch(tvd.CIFAR10, "_load_meta", load_meta)


# JPEGs ----------------------------------------------------------------------------------------------------
def _jpeg(path, rng, size):
    from PIL import Image

    w, h = size
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=85)


# Oxford-IIIT Pet ------------------------------------------------------------------------------------------
# The 37 breeds: cats capitalised, dogs lower-case (the dataset's own file-name convention). Class ids are
# 1..37 in case-insensitive alphabetical order; species 1 = cat, 2 = dog; breed id counts within a species.
PET_BREEDS = ("Abyssinian Bengal Birman Bombay British_Shorthair Egyptian_Mau Maine_Coon Persian Ragdoll "
              "Russian_Blue Siamese Sphynx american_bulldog american_pit_bull_terrier basset_hound beagle boxer "
              "chihuahua english_cocker_spaniel english_setter german_shorthaired great_pyrenees havanese "
              "japanese_chin keeshond leonberger miniature_pinscher newfoundland pomeranian pug saint_bernard "
              "samoyed scottish_terrier shiba_inu staffordshire_bull_terrier wheaten_terrier "
              "yorkshire_terrier").split()


def write_pets(root, trainval_per_class=2, test_per_class=1, size=(96, 72)):
    """Oxford-IIIT Pet as torchvision.datasets.OxfordIIITPet reads it: images/<Breed>_<n>.jpg and
    annotations/{trainval,test}.txt with lines "<image id> <class id 1..37> <species 1|2> <breed id>"
    (``_check_exists`` only needs the two folders; the class names come from the image ids)."""
    base = os.path.join(root, "oxford-iiit-pet")
    img_dir, ann_dir = os.path.join(base, "images"), os.path.join(base, "annotations")
    os.makedirs(img_dir)
    os.makedirs(ann_dir)
    rng = np.random.default_rng(1)
    per_species = {True: 0, False: 0}
    lines = {"trainval": [], "test": []}
    for class_id, breed in enumerate(sorted(PET_BREEDS, key=str.lower), start=1):
        cat = breed[0].isupper()
        per_species[cat] += 1
        n = 0
        for split, count in (("trainval", trainval_per_class), ("test", test_per_class)):
            for _ in range(count):
                n += 1
                image_id = f"{breed}_{n}"
                _jpeg(os.path.join(img_dir, image_id + ".jpg"), rng, size)
                lines[split].append(f"{image_id} {class_id} {1 if cat else 2} {per_species[cat]}")
    for split, ls in lines.items():
        with open(os.path.join(ann_dir, f"{split}.txt"), "w") as fh:
            fh.write("\n".join(ls) + "\n")


# Imagenette -----------------------------------------------------------------------------------------------
# The 10 WordNet ids of Imagenette (torchvision.datasets.Imagenette._WNID_TO_CLASS).
IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257")


def write_imagenette(root, train_per_class=3, val_per_class=2, size=(80, 60), folder="imagenette2-320"):
    """Imagenette as torchvision.datasets.Imagenette(size="320px") reads it: imagenette2-320/{train,val}/
    <wnid>/*.JPEG (``_check_exists`` needs the folder; classes come from the wnid folders; ``.JPEG`` matched
    case-insensitively). File names follow the real ones (<wnid>_<n>.JPEG, ILSVRC2012_val_<n>.JPEG)."""
    rng = np.random.default_rng(2)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for wnid in IMAGENETTE_WNIDS:
            d = os.path.join(root, folder, split, wnid)
            os.makedirs(d)
            for i in range(count):
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{wnid[1:]}{i}.JPEG"
                _jpeg(os.path.join(d, name), rng, size)


def write_all(root):
    """Every fixture above under one root (what HVP_DATA_ROOT points at)."""
    write_cifar(root)
    write_pets(root)
    write_imagenette(root)
    return root


# A kernel subprocess: sitecustomize --------------------------------------------------------------------------
_SITECUSTOMIZE = '''\
"""Written by tests/fixtures.py for the notebook kernels of tests/test_gpu_branches.py; never on a real run.

Python imports `sitecustomize` at start-up from the first directory on sys.path that has one; the test puts
this file's directory first on the kernel's PYTHONPATH. Two patches:

1. CIFAR md5 sums. torchvision verifies CIFAR-10's pickles against their md5 sums, which generated fixture
   files cannot match. The production loader must keep verifying, and the notebook runs in a kernel
   subprocess that the test cannot monkeypatch, so here (and only here) a file is accepted without its md5
   check when it lies under the fixture root and exists; every other path still goes through torchvision's
   real check.
2. No network. A connection (or a name lookup) for anything but this machine raises, so a download attempt
   fails loudly instead of fetching (CI has no network anyway; this makes the failure immediate and clear).
"""
import os
import socket

FIXTURE_ROOT = os.path.realpath({root!r})
_LOCAL = {{"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}}


def _check_local(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host is not None and str(host) not in _LOCAL:
        raise ConnectionRefusedError(f"tests/test_gpu_branches.py: no network in this test (tried {{host!r}})")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):
    if isinstance(address, tuple):
        _check_local(address[0])
    return _connect(self, address)


def connect_ex(self, address):
    if isinstance(address, tuple):
        _check_local(address[0])
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    _check_local(host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo

import torchvision.datasets.cifar as _cifar  # noqa: E402

_check_integrity = _cifar.check_integrity


def check_integrity(fpath, md5=None):
    path = os.path.realpath(fpath)
    if path.startswith(FIXTURE_ROOT + os.sep) and os.path.isfile(path):
        return True
    return _check_integrity(fpath, md5)


_cifar.check_integrity = check_integrity
'''


def write_sitecustomize(directory, fixture_root):
    """Write ``directory/sitecustomize.py`` (see its docstring above) and return ``directory``: put it first
    on a subprocess's PYTHONPATH to accept CIFAR fixture files under ``fixture_root`` without their md5 sums
    and to refuse any non-local network connection."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "sitecustomize.py"), "w") as fh:
        fh.write(_SITECUSTOMIZE.format(root=str(fixture_root)))
    return directory
