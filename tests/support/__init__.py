"""Shared test support (like mitmproxy's `taddons`/`tflow`): one fake clock, fake upstreams,
process launchers. Test modules and `bench/` import from here, never from each other."""
