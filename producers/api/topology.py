"""The service map: services and the dependencies the catalog gives them (`services` view,
catalog events' `dependencies`), and the blast radius of a deployment. Pure.

An edge runs from a service to a service it depends on; the blast radius of a deployment of
`s` is every service that depends on `s`, directly or through others (its dependents), within
the same tenant. A dependency the catalog names but does not describe is still a node
(`in_catalog` false), so an edge never points nowhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NodeKey = tuple[str, str]  # (tenant, service)


@dataclass
class Node:
    """One service on the map."""

    tenant: str
    service: str
    owner_team: str | None = None
    application: str | None = None
    tier: str | None = None
    in_catalog: bool = False
    dependencies: list[str] = field(default_factory=list)
    dependents: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The node as the topology route answers it."""
        return {
            "id": f"{self.tenant}/{self.service}",
            "tenant": self.tenant,
            "service": self.service,
            "owner_team": self.owner_team,
            "application": self.application,
            "tier": self.tier,
            "in_catalog": self.in_catalog,
            "dependencies": self.dependencies,
            "blast_radius": self.dependents,
        }


def dependents(edges: Iterable[tuple[str, str]], service: str) -> list[str]:
    """Every service that depends on `service` directly or transitively (cycles allowed),
    sorted; `edges` are (service, its dependency) of one tenant."""
    depended_by: dict[str, set[str]] = defaultdict(set)
    for source, target in edges:
        depended_by[target].add(source)
    seen: set[str] = set()
    todo = [service]
    while todo:
        for source in depended_by[todo.pop()]:
            if source not in seen and source != service:
                seen.add(source)
                todo.append(source)
    return sorted(seen)


def build_graph(rows: Iterable[Mapping[str, Any]]) -> list[Node]:
    """The map of `services` rows (tenant, service, owner_team, application, tier,
    dependencies, in_catalog, removed): removed services left out, each node with its blast
    radius; sorted by tenant and service."""
    nodes: dict[NodeKey, Node] = {}
    for row in rows:
        if row.get("removed"):
            continue
        key = (str(row["tenant"]), str(row["service"]))
        nodes[key] = Node(
            tenant=key[0],
            service=key[1],
            owner_team=row.get("owner_team") or None,
            application=row.get("application") or None,
            tier=row.get("tier") or None,
            in_catalog=bool(row.get("in_catalog")),
            dependencies=sorted(set(row.get("dependencies") or ())),
        )
    for tenant, service in list(nodes):
        for dependency in nodes[(tenant, service)].dependencies:
            nodes.setdefault((tenant, dependency), Node(tenant=tenant, service=dependency))
    edges_of: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for (tenant, service), node in nodes.items():
        edges_of[tenant] += [(service, d) for d in node.dependencies]
    for (tenant, service), node in nodes.items():
        node.dependents = dependents(edges_of[tenant], service)
    return [nodes[key] for key in sorted(nodes)]
