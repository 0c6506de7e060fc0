"""balancer_strategies: the table of strategies by config name. Twin:
c-proxy/src/balancer_strategies.c.

Kept apart from balancer.py so the module graph stays a DAG: every strategy imports the
contract in balancer.py, and only this module (used by upstream.py) imports the strategies.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyproxy import balancer_hash, balancer_leastconn, balancer_random, balancer_roundrobin
from pyproxy.balancer import Balancer, Peer, StrategyFactory, strategy_name

_TABLE: dict[str, StrategyFactory] = {
    "round_robin": balancer_roundrobin.RoundRobin,
    "random": balancer_random.Random,
    "least_conn": balancer_leastconn.LeastConn,
    "hash": balancer_hash.Hash,
}


def balancer_ops_for(strategy: object) -> StrategyFactory:
    """The strategy for a config value (every config strategy exists); ValueError otherwise."""
    name = strategy_name(strategy)
    make = _TABLE.get(name)
    if make is None:
        raise ValueError("unknown balancer %s" % name)
    return make


def balancer_new(strategy: object, peers: Sequence[Peer], group: str | None = None) -> Balancer:
    """Balancer for a config value (ConfigBalancer or its spelling); group: the sharing key
    (see balancer.StrategyFactory)."""
    return Balancer(balancer_ops_for(strategy), peers, group)
