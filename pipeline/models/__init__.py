"""Plain nn.Module files, one per model family; hyper-parameters are constructor arguments, never params."""
