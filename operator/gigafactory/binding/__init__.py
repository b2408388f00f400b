"""Binding: assume → write → forget. The I/O half of scheduling: status patches, binding Leases, folds and timeouts."""
