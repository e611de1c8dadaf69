"""Fashion-MNIST, the real dataset that works offline: the loader is tested on small files written here in the
real idx format (plain and gzip), so CI needs neither the Debian package nor the internet."""
import gzip
import os
import struct

import pytest
import torch

import common.data as D


def _write_idx(path, array: torch.Tensor):
    """The idx format written literally (independently of common.data.read_idx): two zero bytes, dtype code
    0x08 (uint8), the number of dimensions, each size as a big-endian uint32, then the bytes."""
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + bytes(array.to(torch.uint8).flatten().tolist())
    with (gzip.open if path.endswith(".gz") else open)(path, "wb") as f:
        f.write(payload)


def _fake_fashion(folder, n_train=12, n_val=7, gz=False, seed=0):
    os.makedirs(folder, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    data = {}
    for split, n in (("train", n_train), ("t10k", n_val)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.int64).to(torch.uint8)
        labels = torch.arange(n) % 10
        ext = ".gz" if gz else ""
        _write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte{ext}"), images)
        _write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte{ext}"), labels)
        data[split] = (images, labels)
    return data


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path):
    """Hide Debian's copy (if this machine has it) so the tests see only the files they write."""
    monkeypatch.setattr(D, "FASHION_SYSTEM_DIRS", [str(tmp_path / "no-system-copy")])


def test_reads_raw_idx_under_root_and_pads_to_32(tmp_path, no_system_copy):
    data = _fake_fashion(str(tmp_path / "FashionMNIST" / "raw"))
    tr, va, n = D.build_datasets("fashion-mnist", root=str(tmp_path), augment="none")
    assert (len(tr), len(va), n) == (12, 7, 10)
    mean, std = D.MEAN_STD["fashion-mnist"][0][0], D.MEAN_STD["fashion-mnist"][1][0]
    for ds, (images, labels) in ((tr, data["train"]), (va, data["t10k"])):
        for i in (0, len(ds) - 1):
            x, y = ds[i]
            assert x.shape == (3, 32, 32) and x.dtype == torch.float32
            assert y == int(labels[i])
            assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])          # grey repeated to 3 channels
            # pixel (r, c) of the 28x28 photo lands at (r + 2, c + 2); the 2-pixel border is black (0)
            expect = (images[i].float() / 255 - mean) / std
            torch.testing.assert_close(x[0, 2:30, 2:30], expect, rtol=0, atol=1e-6)
            torch.testing.assert_close(x[0, :2], torch.full((2, 32), -mean / std), rtol=0, atol=1e-6)


def test_reads_gzip_from_the_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    data = _fake_fashion(str(system), gz=True)
    monkeypatch.setattr(D, "FASHION_SYSTEM_DIRS", [str(system)])
    tr, va, _ = D.build_datasets("fashion-mnist", root=str(tmp_path / "empty-root"), augment="none")
    assert len(tr) == 12 and len(va) == 7
    assert [va[i][1] for i in range(7)] == data["t10k"][1].tolist()


def test_read_idx_agrees_with_torchvision(tmp_path):
    """torchvision's own idx reader (an implementation no one here wrote) reads the same tensors."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    folder = str(tmp_path)
    _fake_fashion(folder)
    for f, reader in (("train-images-idx3-ubyte", read_image_file), ("train-labels-idx1-ubyte", read_label_file)):
        ours = D.read_idx(os.path.join(folder, f))
        theirs = reader(os.path.join(folder, f))
        assert ours.shape == theirs.shape and torch.equal(ours.long(), theirs.long())


def test_read_idx_big_endian_wider_types(tmp_path):
    path = str(tmp_path / "x-idx1-int32")
    values = [1, -2, 70000, -(2 ** 31)]
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 4) + struct.pack(">4i", *values))
    assert D.read_idx(path).tolist() == values


def test_missing_files_name_both_ways_to_get_them(tmp_path, no_system_copy):
    with pytest.raises(D.DatasetNotFoundError) as e:
        D.build_datasets("fashion-mnist", root=str(tmp_path))
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg
    assert "FashionMNIST/raw" in msg


def test_corrupt_file_says_so(tmp_path, no_system_copy):
    folder = str(tmp_path / "FashionMNIST" / "raw")
    _fake_fashion(folder)
    p = os.path.join(folder, "t10k-images-idx3-ubyte")
    with open(p, "rb") as f:
        raw = f.read()
    with open(p, "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        D.build_datasets("fashion-mnist", root=str(tmp_path))
    with open(p, "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(ValueError, match="not an idx file"):
        D.build_datasets("fashion-mnist", root=str(tmp_path))


def test_other_sizes_augmentation_and_loaders(tmp_path, no_system_copy):
    _fake_fashion(str(tmp_path / "FashionMNIST" / "raw"), n_train=40)
    tr, va, _ = D.build_datasets("fashion-mnist", root=str(tmp_path), img_size=48)
    assert tr[0][0].shape == (3, 48, 48) and va[0][0].shape == (3, 48, 48)
    torch.manual_seed(0)
    a = torch.stack([tr[3][0] for _ in range(8)])
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 8)), "train augmentation is not random"
    train_loader, val_loader, n = D.build_loaders("fashion-mnist", root=str(tmp_path), batch_size=16)
    assert train_loader.num_workers == 0 and n == 10          # in memory: workers would only add overhead
    x, y = next(iter(train_loader))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,)
