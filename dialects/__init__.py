"""IR definitions of dsc: one file per dialect (graph: tensor ops with value semantics)."""
