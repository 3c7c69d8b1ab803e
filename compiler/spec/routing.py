"""Cross-datacenter routing as mesh.yaml defines it: which datacenters of a dependency a client reaches."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from compiler.spec.model import Datacenter


def priorities(
    client_dc: str, server_dcs: Collection[str], locality: str, datacenters: Mapping[str, Datacenter]
) -> dict[str, int]:
    """Datacenter -> priority (0 highest, contiguous) for a client in `client_dc`.

    failover: the client's own DC first if the server runs there, then its failover list in
    order, skipping DCs where the server does not run. local: only the client's DC. global:
    every DC of the server at priority 0.
    """
    if locality == "global":
        return {dc: 0 for dc in sorted(server_dcs)}
    if locality == "local":
        return {client_dc: 0} if client_dc in server_dcs else {}
    order = [client_dc, *datacenters[client_dc].failover]
    reachable = [dc for dc in dict.fromkeys(order) if dc in server_dcs]
    return {dc: rank for rank, dc in enumerate(reachable)}


def unreachable(
    client_dc: str, server_dcs: Collection[str], locality: str, datacenters: Mapping[str, Datacenter]
) -> list[str]:
    """The server's DCs a client in `client_dc` can never reach under `locality` (sorted).

    For `local`, the question is only whether the client's own DC has the server; other DCs
    are out of reach by design.
    """
    if locality == "local":
        return [] if client_dc in server_dcs else [client_dc]
    reached = priorities(client_dc, server_dcs, locality, datacenters)
    return sorted(set(server_dcs) - set(reached))
