"""The operator's controllers: one module per concern over one shared state (base.py), composed in
`gigafactory.operating.Operator`. The decisions they carry out are pure (binding/lifecycle.py,
binding/patches.py, scheduling/); here are the caches, the tasks and the writes."""
