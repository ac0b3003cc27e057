"""GroupViT modules: layers, the grouping block, the two towers and the full model."""
