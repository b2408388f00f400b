"""kubectl's answers to a user's mistakes are the ones kube-apiserver makes it give."""
from __future__ import annotations

import pytest

MISSPELT = """
apiVersion: conformance.gigafactory.dev/{version}
kind: {kind}
metadata:
  name: oops
spec:
  size: 1
"""


@pytest.mark.parametrize("version, kind", [("v1", "Widgett"), ("v2", "Widget")], ids=["kind", "version"])
def test_apply_of_an_unknown_kind_says_no_matches(kubectl, namespace, version, kind) -> None:
    # A misspelt kind in a served group version sends kubectl to /openapi/v2 in protobuf for a schema.
    result = kubectl("apply", "-n", namespace, "-f", "-", input=MISSPELT.format(version=version, kind=kind), check=False)
    assert result.returncode == 1
    assert (f'no matches for kind "{kind}" in version "conformance.gigafactory.dev/{version}"'
            in result.stderr), result.stderr
    assert "openapi" not in result.stderr
