"""Tasks: what is learned (model, data, loss, metrics). The trainer runs any of them the same way."""
