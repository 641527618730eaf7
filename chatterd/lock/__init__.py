"""The etcd role lock (``chatterd --lock etcd://HOST:PORT/PREFIX``).

* :mod:`chatterd.lock.url`: the ``--lock`` URL (:class:`LockSpec`, :func:`parse_lock_url`).
* :mod:`chatterd.lock.etcd`: a small client for etcd's v3 JSON gateway (:class:`EtcdClient`).
* :mod:`chatterd.lock.role_lock`: :class:`RoleLock`, a lease per node and a key per role.
"""

from chatterd.lock.etcd import GRPC_NOT_FOUND, EtcdClient, EtcdError, EtcdUnavailable, KeyValue
from chatterd.lock.role_lock import RoleLock
from chatterd.lock.url import LockSpec, LockUrlError, parse_lock_url

__all__ = [
    "GRPC_NOT_FOUND",
    "EtcdClient",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "LockSpec",
    "LockUrlError",
    "RoleLock",
    "parse_lock_url",
]
