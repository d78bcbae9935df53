"""LatentDataModule: latent store -> stratified subject-level train/val/test loaders of (B,C,D,H,W)."""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from monai.utils import unsqueeze_right
from torch.utils.data import DataLoader, Dataset, RandomSampler

from neuromf.data.augmentation import build_augmentation, validate_config
from neuromf.data.io import DataError
from neuromf.data.split import SPLIT_NAMES, load_split, resolve_ratios, save_split, stratified_split
from neuromf.data.store import LatentStore, parse_shape
from neuromf.instantiate import build
from neuromf.run_dir import RunDir

log = logging.getLogger(__name__)
MAX_BAD_FILES_LISTED = 10


class LatentDataset(Dataset):
    """Items: one latent (C, D, H, W) float32, already normalised; ``transform(z, index)`` applied on access (its
    draws depend on the epoch and the index only, see neuromf.data.augmentation). Picklable (holds no reference to
    the datamodule/trainer), so it works with worker processes."""

    def __init__(self, subjects: list[str], load: Callable[[str], torch.Tensor], transform=None):
        self.subjects = list(subjects)
        self.load = load
        self.transform = transform

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, i: int) -> torch.Tensor:
        z = self.load(self.subjects[i])
        return self.transform(z, i) if self.transform is not None else z

    def set_epoch(self, epoch: int) -> None:
        """The epoch the transform's draws are seeded with (shared with worker processes)."""
        if hasattr(self.transform, "set_epoch"):
            self.transform.set_epoch(epoch)


class EpochRandomSampler(RandomSampler):
    """Shuffles with a generator re-seeded from (seed, epoch): Lightning calls set_epoch each epoch, so a run
    resumed from a checkpoint sees the same order as one trained straight through. Under DDP Lightning swaps
    it for a DistributedSampler, as for any RandomSampler."""

    def __init__(self, data_source, seed: int):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = int(seed)
        self.skip = 0  # indices to leave out at the start of the next pass (a resume mid-epoch)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 100_003 + int(epoch))

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class ResumableDataLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch: a pass that starts after a resume leaves out the batches
    the checkpoint had already trained in that epoch (Lightning's restored batch progress), so the run sees the
    same batches in the same order as one trained straight through. The decision is taken at the pass's first
    batch, after Lightning restored its loops (it creates the first iterator earlier, to count the steps). The
    skip happens in the sampler (no latent is loaded for it); under a sampler Lightning swapped in (DDP's
    DistributedSampler) the skipped batches are drawn and dropped instead. `state_dict` makes Lightning treat
    the loader as resumable (and records the position in the checkpoint)."""

    def __init__(self, *args, progress: Callable[[], tuple[int, int, float]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = progress  # -> (epoch, batches of it already trained, batches per epoch (trainer limit))

    def _progress(self) -> tuple[int, int, float]:
        return self.progress() if self.progress is not None else (0, 0, math.inf)

    def state_dict(self) -> dict:
        epoch, done, _ = self._progress()
        return {"epoch": int(epoch), "batches_done": int(done)}

    def load_state_dict(self, state: dict) -> None:
        """The position comes from the trainer's restored progress (see the class doc)."""

    def __iter__(self):
        return self._pass()

    def _pass(self):
        epoch, skip, limit = self._progress()
        if hasattr(self.dataset, "set_epoch"):  # before any sample of this pass is drawn (workers included)
            self.dataset.set_epoch(epoch)
        if not skip:
            yield from super().__iter__()
            return
        remaining = max(0, min(len(self), limit) - skip)
        if isinstance(self.sampler, EpochRandomSampler) and self.batch_sampler is not None:
            self.sampler.skip = skip * int(self.batch_size)
            batches = super().__iter__()
        else:
            batches = itertools.islice(super().__iter__(), skip, None)
        yield from itertools.islice(batches, int(remaining) if math.isfinite(remaining) else None)


class _NormalisedLoader:
    """subject -> normalised latent (C, D, H, W), from the in-memory cache or from disk."""

    def __init__(
        self,
        root: Path,
        files: dict[str, str],
        shape,
        mean,
        std,
        normalize: bool,
        scale: float,
        cache: dict[str, torch.Tensor],
    ):
        self.root, self.files, self.shape = Path(root), files, tuple(shape)
        self.mean, self.std = unsqueeze_right(mean, 4), unsqueeze_right(std, 4)  # (C,) -> (C, 1, 1, 1)
        self.normalize, self.scale, self.cache = normalize, scale, cache

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std if self.normalize else z * self.scale

    def __call__(self, subject: str) -> torch.Tensor:
        if subject in self.cache:
            return self.cache[subject]
        from neuromf.data.store import read_latent

        path = self.root / self.files[subject]
        z, _ = read_latent(path)
        if tuple(z.shape) != self.shape:
            raise DataError(f"{path}: shape {tuple(z.shape)} != {self.shape}")
        return self.normalise(z)


def _available_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


class LatentDataModule(pl.LightningDataModule):
    """Reads ``<latent_dir>/manifest.csv`` + ``stats.json``; see the shared data API for the contract.

    split: (train, val, test) fractions, stratified by dataset x diagnosis, deterministic in ``split_seed`` (fixed
    by default and independent of the run's ``seed``, so every arm and seed of a sweep trains, validates and tests
    on the same subjects; ``seed`` drives shuffling and augmentation only);
    split_ratio: legacy 2-way train fraction (0.9 -> 90/10/0), wins over ``split`` when given.
    normalize: True -> (z - channel_mean) / channel_std; False -> z * scale_factor (``scale_factor``, else
    stats["encoder"]["scale_factor"]): the scale a MAISI diffusion UNet was trained on.
    """

    def __init__(
        self,
        latent_dir: str | None = None,
        demo_variant: str = "small",
        batch_size: int = 4,
        split: Sequence[float] = (0.85, 0.10, 0.05),
        split_ratio: float | None = None,
        seed: int = 0,
        split_seed: int = 0,
        num_workers: int = 0,
        cache_in_memory: bool = True,
        normalize: bool = True,
        scale_factor: float | None = None,
        augmentation: dict | None = None,
        run_dir: str | None = None,
        expected_channels: int | None = None,
        expected_shape: Sequence[int] | None = None,
        cache_max_fraction: float = 0.5,
    ):
        super().__init__()
        self.latent_dir = Path(latent_dir) if latent_dir else None
        self.demo_variant = demo_variant
        self.batch_size = int(batch_size)
        if split_ratio is not None:
            log.warning("split_ratio is the legacy 2-way split; use split=(train, val, test) instead")
        self.ratios = resolve_ratios(split, split_ratio)
        self.seed = int(seed)
        self.split_seed = int(split_seed)
        if self.split_seed != 0:
            log.warning("data.split_seed=%d: not the default split (0); runs with another split_seed train, validate "
                        "and test on other subjects and are not comparable with them", self.split_seed)  # fmt: skip
        self.num_workers = int(num_workers)
        self.cache_in_memory = bool(cache_in_memory)
        self.normalize = bool(normalize)
        self.scale_factor_override = float(scale_factor) if scale_factor is not None else None
        self.augmentation_cfg = validate_config(dict(augmentation) if augmentation else None)
        self.run_dir = Path(run_dir) if run_dir else None
        self.expected_channels = expected_channels
        self.expected_shape = tuple(int(s) for s in expected_shape) if expected_shape is not None else None
        self.cache_max_fraction = float(cache_max_fraction)
        self._ready = False
        self._encoders: dict = {}

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        if self.latent_dir is None:
            from neuromf.data.demo import ensure_demo

            ensure_demo(self.demo_variant)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        if self.latent_dir is None:
            from neuromf.data.demo import ensure_demo

            self.latent_dir = ensure_demo(self.demo_variant)
        self.store = LatentStore(self.latent_dir)
        self.stats = self.store.stats
        self._check_shapes()
        self.splits = self._make_split()
        c = self.num_channels
        mean = torch.tensor(self.stats["channel_mean"], dtype=torch.float32)
        std = torch.tensor(self.stats["channel_std"], dtype=torch.float32)
        if mean.numel() != c or std.numel() != c:
            raise DataError(f"{self.latent_dir}/stats.json: channel_mean/channel_std must have {c} values")
        self.channel_mean, self.channel_std = mean, std
        self.scale_factor = self.scale_factor_override or float(self.stats["encoder"].get("scale_factor", 1.0))
        if self.normalize and bool((std <= 0).any()):
            raise DataError(f"{self.latent_dir}/stats.json: channel_std has zeros, cannot normalise")
        # per-channel std of what the loaders yield: the augmentation noise is calibrated to it
        out_std = torch.ones(c) if self.normalize else std * self.scale_factor
        self.augmentation = build_augmentation(self.augmentation_cfg, out_std, seed=self.seed)
        files = {r["subject"]: r["latent_file"] for r in self.store.rows}
        self._load = _NormalisedLoader(
            self.latent_dir, files, self.latent_shape, mean, std, self.normalize, self.scale_factor, {}
        )
        self.cached = False
        to_cache: set[str] = set()
        if self.cache_in_memory:
            subjects = [s for k in SPLIT_NAMES for s in self.splits[k]]
            nbytes = len(subjects) * int(np.prod(self.latent_shape)) * 4
            if nbytes <= self.cache_max_fraction * _available_memory_bytes():
                to_cache = set(subjects)
                self.cached = True
            else:
                log.warning("latents (%.1f GB) do not fit in memory; reading from disk", nbytes / 2**30)
        self._scan_latents(to_cache)
        for name, values in (("channel_mean", mean), ("channel_std", std)):
            if not bool(torch.isfinite(values).all()):
                raise DataError(
                    f"{self.latent_dir}/stats.json: {name} holds NaN/Inf ({values.tolist()}); re-run "
                    "`python -m neuromf.encode` on this store to recompute it"
                )
        self._ready = True

    def _scan_latents(self, to_cache: set[str]) -> None:
        """Read every latent file of the manifest once: each must be finite (a NaN/Inf voxel poisons training);
        the ones in `to_cache` are kept in memory, normalised. Raises DataError naming the bad files."""
        from neuromf.data.store import read_latent

        bad: list[str] = []
        n_bad = 0
        for row in self.store.rows:
            path = self.latent_dir / row["latent_file"]
            z, _ = read_latent(path)
            if tuple(z.shape) != self.latent_shape:
                raise DataError(f"{path}: shape {tuple(z.shape)} != {self.latent_shape}")
            if not bool(torch.isfinite(z).all()):
                n_bad += 1
                if len(bad) < MAX_BAD_FILES_LISTED:
                    nan, inf = int(torch.isnan(z).sum()), int(torch.isinf(z).sum())
                    bad.append(f"{path} ({nan} NaN, {inf} Inf)")
                continue
            if row["subject"] in to_cache:
                self._load.cache[row["subject"]] = self._load.normalise(z)
        if n_bad:
            more = f" and {n_bad - len(bad)} more" if n_bad > len(bad) else ""
            raise DataError(
                f"{n_bad} latent file(s) hold NaN/Inf values: {'; '.join(bad)}{more}; re-encode them "
                "(`python -m neuromf.encode ... --force`, which also recomputes stats.json)"
            )

    def _check_shapes(self) -> None:
        shape = tuple(int(s) for s in self.stats["shape"])
        if len(shape) != 4:
            raise DataError(f"{self.latent_dir}/stats.json: shape must be [C, D, H, W], got {list(shape)}")
        bad = [r["subject"] for r in self.store.rows if parse_shape(r["shape"]) != shape]
        if bad:
            raise DataError(f"{self.latent_dir}/manifest.csv: subjects {bad[:5]} have a shape other than {shape}")
        if self.expected_channels is not None and int(self.expected_channels) != shape[0]:
            raise DataError(
                f"{self.latent_dir}: latents have {shape[0]} channels but the model expects "
                f"{self.expected_channels} "
                f"(encoder {self.stats['encoder'].get('name')!r}); set the model's in/out channels to "
                f"{shape[0]} "
                "or use a latent store made with the matching encoder"
            )
        if self.expected_shape is not None:
            exp = self.expected_shape
            got = shape if len(exp) == 4 else shape[1:]
            if tuple(exp) != tuple(got):
                raise DataError(
                    f"{self.latent_dir}: latent shape {list(got)} does not match the model's expected shape {list(exp)}"
                )
        self.num_channels = shape[0]
        self.latent_shape = shape

    def _make_split(self) -> dict[str, list[str]]:
        path = RunDir(self.run_dir).split if self.run_dir else None
        if path is not None and path.is_file():
            split = load_split(path, self.store.subjects)
            unused = set(self.store.subjects) - {s for k in SPLIT_NAMES for s in split[k]}
            if unused:
                log.warning("%s: %d manifest subjects are not in the saved split and are not used", path, len(unused))
            return split
        split = stratified_split(self.store.rows, self.ratios, self.split_seed)
        if path is not None:
            save_split(path, split, self.ratios, self.split_seed)
        sizes = ", ".join(f"{k} {len(split[k])}" for k in SPLIT_NAMES)
        log.info("split (data.split_seed=%d): %s", self.split_seed, sizes)
        return split

    # ------------------------------------------------------------------ loading
    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Model space -> encoder space; z (C,D,H,W) or (B,C,D,H,W)."""
        if not self.normalize:
            return z / self.scale_factor
        shape = (-1, 1, 1, 1)
        return z * self.channel_std.to(z).view(shape) + self.channel_mean.to(z).view(shape)

    def dataset(self, name: str) -> LatentDataset:
        self.setup()
        transform = self.augmentation if name == "train" else None
        return LatentDataset(self.splits[name], self._load, transform)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(name)
        cls, extra = (ResumableDataLoader, {"progress": self._train_progress}) if shuffle else (DataLoader, {})
        return cls(
            ds,
            batch_size=self.batch_size,
            sampler=EpochRandomSampler(ds, self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
            **extra,
        )

    def _train_progress(self) -> tuple[int, int, float]:
        """(epoch, batches trained in it, batches per epoch) from the trainer fitting this datamodule."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0, math.inf
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # restored on resume, 0 at an epoch's start
        return trainer.current_epoch, done, trainer.num_training_batches

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def val_latents(self) -> torch.Tensor:
        """All validation latents (N, C, D, H, W), normalised (reference set for distribution metrics)."""
        self.setup()
        if not self.splits["val"]:
            return torch.empty((0, *self.latent_shape))
        return torch.stack([self._load(s) for s in self.splits["val"]])

    def test_latents(self) -> torch.Tensor:
        """All test latents (N, C, D, H, W), normalised: the final evaluation's reference set (neuromf.evaluate)."""
        self.setup()
        if not self.splits["test"]:
            return torch.empty((0, *self.latent_shape))
        return torch.stack([self._load(s) for s in self.splits["test"]])

    def train_latents(self, limit: int | None = None, seed: int = 0) -> torch.Tensor:
        """``limit`` (None: all) training latents (N, C, D, H, W), normalised, not augmented: a seeded random
        subset when ``limit`` is smaller than the split. (The split is sorted by subject name, so its first N are
        often one site or one template: a biased "real" reference set.)"""
        self.setup()
        subjects = self.splits["train"]
        if limit is not None and limit < len(subjects):
            pick = torch.randperm(len(subjects), generator=torch.Generator().manual_seed(seed))[:limit]
            subjects = [subjects[i] for i in sorted(pick.tolist())]
        if not subjects:
            return torch.empty((0, *self.latent_shape))
        return torch.stack([self._load(s) for s in subjects])

    # ------------------------------------------------------------------ decoding
    def encoder(self, device: str | torch.device = "cpu"):
        from neuromf.data.encoders import build_encoder

        key = str(device)
        if key not in self._encoders:
            self._encoders[key] = build_encoder(self.stats["encoder"], device=key)
        return self._encoders[key]

    @property
    def reference_subject(self) -> str:
        self.setup()
        return (self.splits["train"] or self.store.subjects)[0]

    def reference_affine(self) -> np.ndarray:
        return self.store.load(self.reference_subject)[1]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, D, H, W) normalised -> images (B, 1, X, Y, Z) via the store's encoder (on z's device)."""
        self.setup()
        if z.ndim != 5 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"decode: expected (B, {', '.join(map(str, self.latent_shape))}), got {tuple(z.shape)}")
        return self.encoder(z.device).decode(self.denormalize(z.float()))

    def save_sample(self, z: torch.Tensor, out_stem: str | Path) -> tuple[Path, Path]:
        """z (C, D, H, W) normalised -> <out_stem>.nii.gz (reference subject's affine) + <out_stem>.png."""
        from neuromf.data.decode import save_decoded

        self.setup()
        z = self.denormalize(z.detach().float().cpu())
        return save_decoded(z, self.encoder("cpu"), self.reference_affine(), out_stem, title=Path(out_stem).name)


def datamodule_from_config(data: dict, **kwargs) -> pl.LightningDataModule:
    """The datamodule of a `data` config (its `_target_` and keys; `mask_ratio` belongs to the objective, not the
    datamodule); `kwargs` are passed on (run_dir, expected_channels)."""
    return build({k: v for k, v in data.items() if k != "mask_ratio"}, **kwargs)


def datamodule_for_run(cfg, run_dir: str | os.PathLike) -> pl.LightningDataModule:
    """The datamodule of a run's composed config (`cfg`: a DictConfig with data, model and init), splitting as
    recorded in <run_dir>/split.json (written there on the first setup). Started from MAISI weights
    (init.maisi_checkpoint, resumed runs too), latents are fed at the scale that network was trained on,
    z x scale_factor (the checkpoint's, else the store's), not z-scored."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg.data, resolve=True)
    checkpoint = (cfg.get("init") or {}).get("maisi_checkpoint")
    if checkpoint:
        from neuromf.models.maisi_init import read_maisi_checkpoint

        scale = read_maisi_checkpoint(checkpoint)[1].get("scale_factor")
        data.update(normalize=False, scale_factor=float(scale) if scale is not None else None)
        log.info("init.maisi_checkpoint: latents fed as z x %s (not z-scored), as MAISI was trained",
                 scale if scale is not None else "the store's scale_factor")  # fmt: skip
    return datamodule_from_config(data, run_dir=str(run_dir), expected_channels=cfg.model.in_channels)
