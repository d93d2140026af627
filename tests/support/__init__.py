"""Shared test support: test modules and `bench/` import from here, never from each other.

- clock.py: `VirtualTime`, the one fake clock (monotonic, wall, sleep; `advance`, `jump`).
- protocol.py: the server's per-connection HTTP protocol on a fake transport and virtual time.
- inprocess.py: `InProcessProxy`, the proxy app in process with any httpx transport upstream.
- upstreams.py: fake upstreams: `RecordingUpstream` (raw, on a socket), `QuotaUpstream`
  (scripted Z.AI for in-process tests), `read_request` for recording ASGI apps.
- redis.py: `FakeRedis`, an in-memory Redis that can also hang or lie.
- servers.py: real processes: `start_zai_proxy`/`running_zai_proxy`, `start_redis`
  (`RedisServer`), `dashboard_stack`, `send_traffic`, `free_port`, `require_binary`.
- blue_green.py: a blue-green pair on one machine: Service stand-in, fake cluster, SDK workers.
- kubectl_fake.py: installs the fake `kubectl` for one test or bench run.
- rawhttp.py: a minimal HTTP/1.1 client over a raw socket.

The session-wide `redis_server` fixture (one `RedisServer`) is in tests/conftest.py.
"""
