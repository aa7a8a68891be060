"""Running models: packing into token budgets, attention backends and kernels, the device
loop, the model definitions and their loaders (:mod:`virnuc_core.engine.models`), model files.

Built from resolved values (device, dtype, attention backend); imports only
:mod:`virnuc_core.util`, never the settings, the registry or the data layer."""
