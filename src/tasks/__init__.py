"""Tasks: what is learned (model, data, loss, metrics); each its own package, independent of the others."""
