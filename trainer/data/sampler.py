"""What a rank reads when: the epoch's batch order and each training crop's offset.

Both are pure functions of (seed, epoch, index), never of worker or process RNG state, so a resumed
run continues bit-exact whatever the number of loader workers.
"""

from __future__ import annotations

import math

import numpy as np

from trainer.data.format import DataError

CROP_STREAM, TARGET_STREAM, SHUFFLE_STREAM = 1, 2, 3  # independent random streams per purpose


class ResumableBatchSampler:
    """Batches of indices for one rank; every rank gets the same number per epoch.

    The epoch's order is a permutation seeded by (seed, epoch). Global batch ``b`` is
    ``order[b*G:(b+1)*G]`` with ``G = batch_size * world_size``; rank ``r`` takes its ``r``-th
    slice of ``batch_size``. ``drop_last=False`` pads the last global batch by wrapping around
    the order (some items twice), as DistributedSampler does.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int, world_size: int, seed: int,
                 shuffle: bool = True, drop_last: bool = True):
        if num_items < 1 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler settings: num_items={num_items}, batch_size={batch_size}, "
                             f"rank={rank}, world_size={world_size}")
        self.num_items, self.batch_size, self.rank, self.world_size = num_items, batch_size, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0
        self._start_batch = 0

    def __len__(self) -> int:
        per_step = self.batch_size * self.world_size
        return self.num_items // per_step if self.drop_last else math.ceil(self.num_items / per_step)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._start_batch = 0
        self.epoch = epoch

    def start_at(self, batch: int) -> None:
        """The next pass (of the current epoch) starts at batch index ``batch`` of this layout."""
        self._start_batch = min(max(0, int(batch)), len(self))

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_items)
        return np.random.default_rng([self.seed, self.epoch, SHUFFLE_STREAM]).permutation(self.num_items)

    def __iter__(self):
        per_step = self.batch_size * self.world_size
        order = np.resize(self.order(), len(self) * per_step)  # wraps around for drop_last=False
        start, self._start_batch = self._start_batch, 0  # a resume applies to one pass only
        for batch in range(start, len(self)):
            first = batch * per_step + self.rank * self.batch_size
            yield order[first:first + self.batch_size].tolist()

    def state_dict(self, batches_done: int) -> dict:
        """The position after this rank consumed ``batches_done`` batches of the current epoch."""
        return {"epoch": self.epoch, "batches_done": int(batches_done), "seed": self.seed,
                "num_items": self.num_items, "batch_size": self.batch_size, "world_size": self.world_size,
                "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict) -> int:
        """Continue at the saved position; returns the batch index (of this layout) to continue at.

        A different world size or batch size is handled when the items consumed so far end on a
        batch boundary of the new layout (always true at an epoch end, or when shrinking e.g.
        4 -> 2 -> 1 GPUs); otherwise it is refused with a DataError.
        """
        for key in ("seed", "num_items", "shuffle"):
            if state[key] != getattr(self, key):
                raise DataError(f"sampler state: {key}={state[key]!r} in the checkpoint but {getattr(self, key)!r} "
                                f"now (did the training set or run.seed change?); resume with the same data and seed")
        consumed = state["batches_done"] * state["batch_size"] * state["world_size"]
        per_step = self.batch_size * self.world_size
        self.epoch = state["epoch"]
        if state["batches_done"] == 0 or consumed >= self.num_items:
            start = 0 if state["batches_done"] == 0 else len(self)
        elif consumed % per_step == 0:
            start = consumed // per_step
        else:
            raise DataError(f"sampler state: cannot continue epoch {self.epoch} mid-way: {consumed} items done "
                            f"(batch_size {state['batch_size']} x world_size {state['world_size']}) is not a "
                            f"multiple of batch_size {self.batch_size} x world_size {self.world_size}; resume "
                            f"with world_size {state['world_size']} or from a checkpoint saved at an epoch end")
        self.start_at(start)
        return self._start_batch


def mix64(*values: int) -> int:
    """A 64-bit hash of the values (splitmix64 finaliser per value): cheap, pure, well spread."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state


def crop_offset(seed: int, epoch: int, item: int, length: int, crop: int) -> int:
    """Start of the training crop: a pure function of its arguments, (nearly) uniform over the
    valid starts. A hash, not a numpy Generator: constructing one per crop cost as much as reading it."""
    if length <= crop:
        return 0
    return mix64(seed, epoch, item, CROP_STREAM) % (length - crop + 1)
