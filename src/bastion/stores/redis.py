"""Shared state for several workers or hosts: Redis or a Redis Cluster (redis-py's asyncio
clients).

Every call has a timeout (half a second by default) so that a Redis that stops
answering turns into a prompt 503 rather than requests piling up; the pipeline then
fails closed. On one Redis the timeout is bastion's own deadline around the whole
command (``bastion.timeouts``), not redis-py's ``socket_timeout``: on Python 3.11 that
one starts a task for every command sent (``asyncio.wait_for``) and a timer for every
reply read, about a tenth of a call's whole cost on Redis. A command cancelled at its
deadline closes its connection (redis-py drops a connection interrupted mid-reply),
so no late reply is read by the next command. Keys live under a prefix, so one Redis
can serve several apps.

``redis+cluster://[[user]:password@]host:port[,host:port…]`` names a Redis Cluster by one
or more of its nodes (``limits`` spells its cluster storage the same way, so the counters
follow the sessions there); the client asks them for the others and for who owns which
slot. Keys are ``prefix + key`` there too, without a hash tag: every command the store
sends names one key (the compare-and-set script included), so none can span two slots,
and keys copied from a single Redis into a cluster keep their sessions valid.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

try:
    import redis.asyncio as redis
    from redis._parsers.commands import AsyncCommandsParser
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ClusterDownError, NoScriptError, SlotNotCoveredError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as missing:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "bastion's Redis store (BASTION_STORE=redis://…, RedisStore) needs redis-py: "
        "pip install 'bastion[redis]'"
    ) from missing

from bastion.errors import ConfigurationError
from bastion.timeouts import DeadlinePassed, within

__all__ = ["CLUSTER_SCHEME", "RedisStore", "cluster_client", "cluster_nodes", "reconnect_once"]

T = TypeVar("T")

CLUSTER_SCHEME = "redis+cluster://"
"""How a URL names a Redis Cluster rather than one Redis (``limits``' spelling)."""

# Compare and set in one step on the server: one key, so it holds on Redis Cluster too.
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""


def reconnect_once() -> Retry:
    """redis-py's retry policy for bastion: one immediate retry after a dropped
    connection, nothing else.

    A pooled connection that Redis closed (Redis restarted, a failover, an idle timeout)
    is only found dead when it is next used; without a retry that call answers 503 although
    Redis is up, once for every connection in the pool. The retry reconnects at once (a
    Redis that is down refuses that in a millisecond too). Timeouts are not retried: a
    Redis that does not answer costs one timeout per call, not two.
    """
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class _CommandTableOnce(AsyncCommandsParser):
    """The table of Redis commands (``COMMAND``), fetched once per client.

    redis-py 6 fetches it again from the first master each time the client relearns the
    cluster's map, which it does after any failed call: while that master is down, every
    call then fails, those for keys on the live masters too. The table does not change
    with the topology (later redis-py releases fetch it once as well)."""

    async def initialize(self, node: ClusterNode | None = None) -> None:
        if not self.commands:
            await super().initialize(node)
        elif node is not None:
            self.node = node


class _Cluster(RedisCluster):
    """redis-py's cluster client, retrying what ``reconnect_once`` retries, and routing a
    command only once it knows who serves which slot.

    The cluster client takes only the number of retries from its ``Retry`` and retries
    every error in this tuple: by default a timeout too, so a node that stopped answering
    would cost two timeouts per call. Without it, one; the call after a timeout may still
    cost two, as the client first asks a node picked at random for the cluster's map
    again, and that may be the silent one. A dropped connection is still retried (after
    asking a live node who owns the slot now: a failover), and so is a cluster that
    reports itself down while it elects a new master.
    """

    # redis-py types the tuple as exactly its own four members.
    ERRORS_ALLOW_RETRY = (  # type: ignore[assignment]
        RedisConnectionError,
        ClusterDownError,
        SlotNotCoveredError,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands_parser = _CommandTableOnce()
        self._seeds = [(node.host, node.port) for node in self.nodes_manager.startup_nodes.values()]

    async def initialize(self, *args: Any, **kwargs: Any) -> _Cluster:
        # redis-py (6.0 at least) drops a node from the nodes it starts from whenever a
        # command to it fails to connect, and then closes every connection: calls in
        # flight to the other masters (health() pings them all at once) fail as well and
        # drop their nodes too. With none left the client can never find the cluster
        # again, even once every master is back. So every seed the URL named is put back
        # before the client looks for the cluster.
        if self._initialize:
            known = self.nodes_manager.startup_nodes
            for host, port in self._seeds:
                if f"{host}:{port}" not in known:
                    node = ClusterNode(host, port, **self.nodes_manager.connection_kwargs)
                    known[node.name] = node
        await super().initialize(*args, **kwargs)
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # Learn the slots before routing the command, not while: redis-py sends a command
        # that arrives before it knows them (a fresh client, or one that dropped its map
        # while the cluster was down) to a random master, and every fifth MOVED reply
        # drops every connection, those of calls in flight too: concurrent first calls
        # fail with "Connection closed". Once the slots are known this returns at once.
        await self.initialize()
        return await super().execute_command(*args, **kwargs)


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The ``host:port`` pairs, user name and password of a ``redis+cluster://`` URL.
    A URL that is not one is a ``ConfigurationError`` that shows the form, never the URL
    (it may hold a password)."""
    form = "redis+cluster://[[user]:password@]host:port[,host:port…]"
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    # A cluster has one database (0), and no option is read from the URL.
    if parts.path not in ("", "/", "/0") or parts.query or parts.fragment:
        raise ConfigurationError(f"a Redis Cluster URL has no database or options: {form}")
    nodes = []
    for location in hosts.split(","):
        try:
            node = urlsplit("//" + location.strip())
            host, port = node.hostname, node.port
        except ValueError:
            host = port = None
        if not host or port is None:
            raise ConfigurationError(f"a Redis Cluster URL names host:port pairs: {form}")
        nodes.append((host, port))
    user, has_password, password = userinfo.partition(":")
    return nodes, unquote(user) or None, unquote(password) if has_password else None


def cluster_client(url: str, timeout: float) -> RedisCluster:
    """A cluster client on the nodes of ``url`` with the store's timeouts and retry (the
    rate-limit counters use one too)."""
    nodes, username, password = cluster_nodes(url)
    return _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=username,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=reconnect_once(),
        health_check_interval=30,
        # Connections per node: past them a call fails at once (it does not queue), so as
        # many as ``limits`` allows its own cluster client; a single Redis has no bound.
        max_connections=1000,
    )


class RedisStore:
    """State in Redis at ``url``: ``redis://host:port/db`` (one Redis) or
    ``redis+cluster://host:port[,host:port…]`` (a Redis Cluster)."""

    def __init__(self, url: str, *, timeout: float = 0.5, prefix: str = "bastion:") -> None:
        self.url = url
        self.prefix = prefix
        self._redis: redis.Redis | RedisCluster
        self._deadline: float | None = None
        """bastion's deadline per command on one Redis; ``None``: redis-py's own timeouts
        (the cluster client's)."""
        if url.startswith(CLUSTER_SCHEME):
            self._redis = cluster_client(url, timeout)
            nodes = ",".join(f"{host}:{port}" for host, port in cluster_nodes(url)[0])
            self._where = f"cluster={nodes!r}"
        else:
            self._redis = redis.Redis.from_url(
                url,
                socket_timeout=None,  # the deadline below instead, cheaper
                socket_connect_timeout=timeout,
                retry=reconnect_once(),
                health_check_interval=30,
            )
            self._deadline = timeout
            # The URL may hold a password: show where, not how.
            kwargs = self._redis.connection_pool.connection_kwargs
            self._where = f"host={kwargs.get('host', '?')!r}, port={kwargs.get('port', '?')!r}"
        # EVALSHA; redis-py loads the script again when a restarted Redis no longer has it.
        self._replace = self._redis.register_script(_REPLACE)

    async def _bounded(self, command: Callable[[], Awaitable[T]]) -> T:
        """``command()`` within the store's timeout: redis-py's ``TimeoutError`` after it."""
        if self._deadline is None:
            return await command()
        try:
            return await within(self._deadline, command)
        except DeadlinePassed:
            raise RedisTimeoutError(
                f"Redis did not answer within {self._deadline} s ({self._where})"
            ) from None

    async def get(self, key: str) -> bytes | None:
        value = await self._bounded(lambda: self._redis.get(self.prefix + key))
        return value.encode() if isinstance(value, str) else value

    async def get_and_run(
        self, key: str, scripts: Sequence[tuple[Any, list[str], list[Any]]]
    ) -> tuple[bytes | None, list[Any]]:
        """``get(key)`` and each Lua script (a redis-py ``Script``, its keys and arguments:
        the rate-limit counters' hits, ``Counter.scripts``) in one round trip: a pipeline,
        not a transaction (each command stands on its own, as when sent apart).

        Only on one Redis: on a cluster the key and the scripts' keys live on different
        nodes. A script Redis no longer holds (it restarted) is loaded and run again."""
        if self._deadline is None:
            raise RuntimeError("get_and_run is for one Redis, not a cluster")

        async def send() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(self.prefix + key)
            for script, keys, args in scripts:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return await pipe.execute(raise_on_error=False)

        value, *replies = await self._bounded(send)
        for at, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                # The script's own call loads it on this Redis, then runs it.
                replies[at] = await self._bounded(functools.partial(self._run, *scripts[at]))
            elif isinstance(reply, Exception):
                raise reply
        if isinstance(value, Exception):
            raise value
        return (value.encode() if isinstance(value, str) else value), replies

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await script(keys=keys, args=args, client=self._redis)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        px = max(1, int(ttl * 1000))
        await self._bounded(lambda: self._redis.set(self.prefix + key, value, px=px))

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float
    ) -> bool:
        px = max(1, int(ttl * 1000))
        if expected is None:
            return bool(
                await self._bounded(
                    lambda: self._redis.set(self.prefix + key, value, px=px, nx=True)
                )
            )
        return bool(
            await self._bounded(
                lambda: self._replace(keys=[self.prefix + key], args=[expected, value, px])
            )
        )

    async def delete(self, key: str) -> None:
        await self._bounded(lambda: self._redis.delete(self.prefix + key))

    @property
    def rate_limit_storage(self) -> str:
        """Where the rate-limit counters go by default: this same Redis or cluster (a
        ``limits`` storage URI: both spell it as the store does), so that they are shared
        like the sessions."""
        return self.url

    async def health(self) -> None:
        # On a cluster, every master: each holds a share of the sessions.
        if isinstance(self._redis, RedisCluster):
            answered = await self._redis.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            answered = await self._bounded(self._redis.ping)
        if not answered:
            raise ConnectionError("Redis did not answer PING")

    async def close(self) -> None:
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"RedisStore({self._where})"
