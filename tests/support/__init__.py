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
- simulator.py: requests to the simulator in process: routes, keys, bodies, `sim`, SSE parsers.
- forwarding.py: `Harness`, the proxy app on self-driving virtual time, and `Script`, the
  scripted upstream, with its answers (`ok`, `z429`, `status`, `refuse`, `stream`).
- switch.py: the fake kubectl's `Cluster` (state and call log), `install_cluster`, `V1`/`V2`
  pods, `learned` limiter-state documents.
- quota_windows.py: `view`, a quota `WindowView` observed at `NOW`, for the pacing tests.
- streams.py: the recorded usage streams (`CASES`, `variants`, `usage_chunk`) and
  `stream_ledger`, the ledger a streaming request gets.
- dashboard.py: `Rig`, the dashboard app with a fake proxy to scrape and a driven clock.

The session-wide `redis_server` fixture (one `RedisServer`) is in tests/conftest.py.
"""
