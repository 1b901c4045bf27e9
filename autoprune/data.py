"""Datasets with train / search / test splits.

The *search* split is carved deterministically (seeded) from the training set;
sensitivity and search evaluate on it. The *test* split is only for final
reports. ``train_plain`` holds the training images without augmentation (BN
recalibration reads it).

Names: ``digits`` (scikit-learn's bundled 8x8 digits resized to 32x32 RGB, the
offline default), ``cifar10``, ``cifar100``, ``fashion-mnist`` (torchvision, or
the Debian package ``dataset-fashion-mnist``), ``imagenet`` (a folder with
``train/`` and ``val/``), ``folder:PATH`` (an ImageFolder tree).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from autoprune.errors import AutopruneError

DATASETS = ("digits", "cifar10", "cifar100", "fashion-mnist", "imagenet", "folder:PATH")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DataSplits:
    """One dataset's splits and what a model needs to know about it."""

    name: str
    train: Dataset
    train_plain: Dataset
    search: Dataset
    test: Dataset
    num_classes: int
    input_size: int


def default_data_dir() -> Path:
    return Path(os.environ.get("AUTOPRUNE_DATA", Path.home() / ".cache" / "autoprune" / "data"))


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    input_size: int | None = None,
    search_size: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> DataSplits:
    """Load ``name`` and split it; ``search_size`` defaults to 10 % of train (>= 300)."""
    root = Path(data_dir) if data_dir else default_data_dir()
    if name == "digits":
        train, train_plain, test, classes, size = _digits(input_size or 32)
    elif name in ("cifar10", "cifar100"):
        train, train_plain, test, classes, size = _cifar(name, root, input_size or 32, download)
    elif name == "fashion-mnist":
        train, train_plain, test, classes, size = _fashion_mnist(root, input_size or 32, download)
    elif name == "imagenet":
        train, train_plain, test, classes, size = _image_folder(
            root if data_dir else root / "imagenet", input_size or 224, "imagenet"
        )
    elif name.startswith("folder:"):
        train, train_plain, test, classes, size = _image_folder(
            Path(name.split(":", 1)[1]), input_size or 224, name
        )
    else:
        raise AutopruneError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    search_idx, train_idx = _carve(len(train), search_size, seed)
    return DataSplits(
        name=name,
        train=Subset(train, train_idx),
        train_plain=Subset(train_plain, train_idx),
        search=Subset(train_plain, search_idx),
        test=test,
        num_classes=classes,
        input_size=size,
    )


def _carve(n: int, search_size: int | None, seed: int) -> tuple[list[int], list[int]]:
    if search_size is None:
        search_size = min(max(n // 10, 300), n * 3 // 10)
    if not 0 < search_size < n:
        raise AutopruneError(f"search split of {search_size} images impossible from {n} training images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[:search_size]), sorted(perm[search_size:])


def make_loader(
    dataset: Dataset,
    batch_size: int = 128,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with a seeded shuffle; in-memory datasets load in the main process."""
    if num_workers is None:
        num_workers = 0 if _in_memory(dataset) else min(4, os.cpu_count() or 1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )


@dataclass
class EvalBatches:
    """Images held in memory as fixed batches, so every candidate sees exactly the same data."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, batch_size: int, limit: int | None = None, seed: int | None = None
    ) -> EvalBatches:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        if seed is None:
            order = torch.arange(n)
        else:
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
        xs, ys = zip(*(dataset[int(i)] for i in order), strict=True)
        x, y = torch.stack(xs), torch.as_tensor(ys)
        return cls(list(zip(x.split(batch_size), y.split(batch_size), strict=True)))

    @property
    def images(self) -> list[torch.Tensor]:
        return [x for x, _ in self.batches]

    def to(self, device: torch.device) -> EvalBatches:
        return EvalBatches([(x.to(device), y.to(device)) for x, y in self.batches])


def _in_memory(dataset: Dataset) -> bool:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return isinstance(dataset, TensorImages)


class TensorImages(Dataset):
    """Images held in one tensor, with an optional per-item transform."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


def random_shift(pad: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random translation by up to ``pad`` pixels (zero fill): digit-safe augmentation."""

    def shift(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (pad, pad, pad, pad))
        i, j = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        return padded[..., i : i + h, j : j + w]

    return shift


def _standardize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Gray (N,1,h,w) floats in [0,1] -> (N,3,size,size), zero mean / unit std."""
    x = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    return x.expand(-1, 3, -1, -1).contiguous()


def _digits(size: int):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    x = _standardize(images, size)
    # A fixed test split (seed 0, stratified), independent of the search seed.
    rng = np.random.default_rng(0)
    test_mask = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(bunch.target == c)
        test_mask[rng.choice(idx, size=len(idx) // 5, replace=False)] = True
    tr, te = torch.from_numpy(~test_mask), torch.from_numpy(test_mask)
    shift = random_shift(max(1, size // 16))
    train = TensorImages(x[tr], labels[tr], shift)
    plain = TensorImages(x[tr], labels[tr])
    return train, plain, TensorImages(x[te], labels[te]), 10, size


def _download_hint(name: str, root: Path, exc: Exception) -> AutopruneError:
    return AutopruneError(
        f"cannot load {name} from {root} ({type(exc).__name__}: {exc}); connect to the internet "
        f"so torchvision can download it, or pass --data-dir with the files, or use --dataset digits"
    )


def _cifar(name: str, root: Path, size: int, download: bool):
    import torchvision
    from torchvision.transforms import v2

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    base = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    resize = [v2.Resize(size, antialias=True)] if size != 32 else []
    norm = [v2.Normalize(CIFAR_MEAN, CIFAR_STD)]
    aug = [v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip()]
    plain_t = v2.Compose(base + resize + norm)
    train_t = v2.Compose(base + resize + aug + norm)
    try:
        train = cls(root, train=True, download=download, transform=train_t)
        plain = cls(root, train=True, download=False, transform=plain_t)
        test = cls(root, train=False, download=download, transform=plain_t)
    except Exception as exc:  # torchvision raises URLError, RuntimeError, OSError...
        raise _download_hint(name, root, exc) from None
    return train, plain, test, len(train.classes), size


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _fashion_mnist(root: Path, size: int, download: bool):
    def arrays(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if split == "train" else "t10k"
        for folder in (root / "fashion-mnist", root, DEBIAN_FASHION_MNIST):
            img = folder / f"{prefix}-images-idx3-ubyte.gz"
            lab = folder / f"{prefix}-labels-idx1-ubyte.gz"
            if img.exists() and lab.exists():
                return torch.from_numpy(_read_idx(img).copy()), torch.from_numpy(
                    _read_idx(lab).astype(np.int64)
                )
        import torchvision

        try:
            ds = torchvision.datasets.FashionMNIST(root, train=split == "train", download=download)
        except Exception as exc:
            raise _download_hint("fashion-mnist", root, exc) from None
        return ds.data, ds.targets

    def prepare(images: torch.Tensor) -> torch.Tensor:
        x = images.float().unsqueeze(1) / 255.0
        return _standardize(x, size)

    (xtr, ytr), (xte, yte) = arrays("train"), arrays("test")
    x_train = prepare(xtr)
    train = TensorImages(x_train, ytr, random_shift(max(1, size // 16)))
    return train, TensorImages(x_train, ytr), TensorImages(prepare(xte), yte), 10, size


def _image_folder(root: Path, size: int, name: str):
    import torchvision
    from torchvision.transforms import v2

    train_dir, val_dir = root / "train", root / "val"
    if not (train_dir.is_dir() and val_dir.is_dir()):
        raise AutopruneError(
            f"{name}: expected a folder with train/ and val/ ImageFolder trees at {root}; "
            "pass it with --data-dir (imagenet) or --dataset folder:PATH"
        )
    base = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    norm = [v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_t = v2.Compose(
        [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()] + base + norm
    )
    plain_t = v2.Compose([v2.Resize(int(size * 8 / 7), antialias=True), v2.CenterCrop(size)] + base + norm)
    try:
        train = torchvision.datasets.ImageFolder(str(train_dir), transform=train_t)
        plain = torchvision.datasets.ImageFolder(str(train_dir), transform=plain_t)
        test = torchvision.datasets.ImageFolder(str(val_dir), transform=plain_t)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        # torchvision: "Couldn't find any class folder in ..." / "Found no valid file for the classes ..."
        raise AutopruneError(
            f"{name}: no images to use at {root} ({str(exc).splitlines()[0][:200]})"
        ) from None
    return train, plain, test, len(train.classes), size
