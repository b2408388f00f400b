"""The real control plane the tests start listens on loopback only, and knows who is asking."""
import ipaddress
import json
import os
import pathlib

import kubernetes
import pytest

pytestmark = pytest.mark.real_only


def _listening_addresses(pid: int) -> list[str]:
    """Local addresses of the TCP sockets in LISTEN state that process `pid` holds."""
    inodes = set()
    for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in pathlib.Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(local.split(":")[0])
            # /proc/net prints each 32-bit word of the address in host (little-endian) order.
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(str(ipaddress.ip_address(packed)))
    return found


def test_nothing_listens_beyond_loopback(control_plane, kubeconfig) -> None:
    if control_plane is None:
        pytest.skip("an external cluster: not ours to inspect")
    addresses = [a for pid in control_plane.pids() for a in _listening_addresses(pid)]
    assert addresses, "found no listening socket of etcd or kube-apiserver"
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses


def test_a_minted_user_is_who_rbac_sees(control_plane, kubeconfig) -> None:
    """kubeconfig_for(user, groups) is a real identity: RBAC forbids it what no role grants."""
    if control_plane is None:
        pytest.skip("an external cluster: not ours to mint users for")
    config = control_plane.kubeconfig_for("alice", ["team-a"])
    client = kubernetes.config.new_client_from_config(config_file=config)
    with pytest.raises(kubernetes.client.ApiException) as denied:
        kubernetes.client.CoreV1Api(client).list_namespaced_secret("default")
    assert denied.value.status == 403
    assert 'User "alice" cannot list resource "secrets"' in json.loads(denied.value.body)["message"]
