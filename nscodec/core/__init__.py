"""The core every method stands on: what a method is (:mod:`.methods`), the model ↔ ``.nsc`` contract
(:mod:`.contract`), the shared model base (:mod:`.model_base`: config, occupancy schedule, losses and metrics, assembled
with :class:`nscodec.render.packed.PackedRenderer`) and the image metrics (:mod:`.metrics`)."""
