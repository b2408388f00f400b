"""The Gigafactory API as pydantic v2 models: the one source of truth for the CRD schemas.

Pure data: no I/O, no kopf, no Kubernetes client (an import-linter contract keeps it so).
`gigafactory.crdgen` turns these models into the CRDs in `crds/`; the operator and the runner
parse objects from the API server with the same models.
"""
