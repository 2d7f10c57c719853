"""The local etcd lab: real members, peer links through fault proxies, faults and a workload."""

from __future__ import annotations

from operator_console.lab.etcd.binary import EtcdBinary, EtcdBinaryError, find_etcd, wheel_binary
from operator_console.lab.etcd.client import ClientTLS, EtcdClient, EtcdError
from operator_console.lab.etcd.cluster import EtcdCluster, EtcdTLS

__all__ = [
    "ClientTLS",
    "EtcdBinary",
    "EtcdBinaryError",
    "EtcdClient",
    "EtcdCluster",
    "EtcdError",
    "EtcdTLS",
    "find_etcd",
    "wheel_binary",
]
