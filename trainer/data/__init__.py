"""Training data: packed HDF5 shards (format, packing, reading) and the data kinds the core's
loaders come from (registered here, torch-free; each module is imported when a run builds loaders)."""

from trainer.core.registry import register_data_kind

register_data_kind("paired", "trainer.data.shards")
register_data_kind("mixing", "trainer.data.mixing")
