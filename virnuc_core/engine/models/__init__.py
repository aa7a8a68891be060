"""The model definitions (ESM-2, DNABERT-S, the classifier, the tiny and stand-in models) and
their loaders."""
