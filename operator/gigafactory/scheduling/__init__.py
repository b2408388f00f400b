"""The scheduler: pure framework, snapshot, queue ordering, cycle and plugins. No I/O, no kopf."""
