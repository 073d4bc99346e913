"""The composition root: which backend each name means, built from the resolved options.

A backend is one module behind its interface (``registry.base.Registry``,
``runtime.base.Runtime``, ``proxy.base.Proxy``); adding one is that module plus one row in a
table here. Nothing else names a backend class. Imports are lazy: a command builds only what
it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bluegreen import validate
from bluegreen.errors import UsageError

if TYPE_CHECKING:
    from bluegreen.flow.steps import Steps
    from bluegreen.proxy.base import Proxy
    from bluegreen.registry.base import Registry
    from bluegreen.runtime.base import Runtime

Opts = dict[str, Any]


def _consul(opts: Opts) -> Registry:
    from bluegreen.registry.consul import ConsulRegistry

    return ConsulRegistry(opts["consul_addr"], token=opts.get("consul_token"),
                          prefix=opts["kv_prefix"])


def _file(opts: Opts) -> Registry:
    from bluegreen.registry.file import FileRegistry

    return FileRegistry(validate.directory(opts["state_file"], "--state-file"),
                        prefix=opts["kv_prefix"])


def _docker(opts: Opts) -> Runtime:
    from bluegreen.runtime.docker import DockerRuntime

    return DockerRuntime(opts.get("docker_host"), opts["publish_ip"], opts.get("advertise_addr"))


def _swarm(opts: Opts) -> Runtime:
    from bluegreen.runtime.swarm import SwarmRuntime

    return SwarmRuntime(opts.get("docker_host"), opts.get("advertise_addr"))


def _local_nginx(opts: Opts) -> Any:
    from bluegreen.proxy.nginx import LocalNginx

    return LocalNginx(opts["nginx_bin"], opts["nginx_conf"], opts.get("nginx_prefix"),
                      opts["nginx_pid_file"])


def _container_nginx(opts: Opts) -> Any:
    from bluegreen.proxy.nginx import ContainerNginx
    from bluegreen.runtime.docker import DockerEngine

    return ContainerNginx(DockerEngine(opts.get("docker_host")), opts["nginx_container"],
                          opts["nginx_conf"], opts.get("nginx_prefix"))


def _include_file(opts: Opts) -> str | None:
    include_file = opts.get("include_file")
    if include_file:
        validate.readable_file(include_file, "--include-file")
    return include_file


def _nginx_files(opts: Opts, controller: Any) -> Proxy:
    from bluegreen.proxy.nginx import NginxProxy

    return NginxProxy(controller, validate.directory(opts["upstream_dir"], "--upstream-dir"),
                      validate.directory(opts["include_dir"], "--include-dir"),
                      location=opts["location"], include_file=_include_file(opts),
                      internal_listen=internal_listen(opts))


def internal_listen(opts: Opts) -> str:
    """``HOST:PORT`` where nginx serves the internal endpoints (containers reach HOST)."""
    host, sep, port = str(opts["internal_listen"]).rpartition(":")
    if not sep:
        raise UsageError(f"invalid --internal-listen {opts['internal_listen']!r}: use HOST:PORT")
    return f"{validate.host(host)}:{validate.port(port, '--internal-listen port')}"


def _nginx_dynamic(opts: Opts) -> Proxy:
    from bluegreen.proxy import dynamic

    upstream_dir = validate.directory(opts["upstream_dir"], "--upstream-dir")
    return dynamic.NginxDynamicProxy(dynamic.DynamicProxy(
        _local_nginx(opts), upstream_dir / dynamic.INCLUDE_NAME,
        validate.directory(opts["include_dir"], "--include-dir"), opts["nginx_control"],
        opts["nginx_state_file"], location=opts["location"], include_file=_include_file(opts)))


REGISTRIES: dict[str, Callable[[Opts], Registry]] = {"consul": _consul, "file": _file}
RUNTIMES: dict[str, Callable[[Opts], Runtime]] = {"docker": _docker, "swarm": _swarm}
PROXIES: dict[str, Callable[[Opts], Proxy]] = {
    "local": lambda opts: _nginx_files(opts, _local_nginx(opts)),
    "container": lambda opts: _nginx_files(opts, _container_nginx(opts)),
    "dynamic": _nginx_dynamic,
}


def _pick(table: dict[str, Any], name: str, option: str) -> Any:
    if name not in table:
        raise UsageError(f"invalid {option} {name!r}: use {' or '.join(table)}")
    return table[name]


def registry(opts: Opts) -> Registry:
    return _pick(REGISTRIES, opts["registry"], "--registry")(opts)


def runtime(opts: Opts) -> Runtime:
    validate.host(opts["publish_ip"])
    if opts.get("advertise_addr"):
        validate.host(opts["advertise_addr"])
    return _pick(RUNTIMES, opts["runtime"], "--runtime")(opts)


def proxy(opts: Opts) -> Proxy:
    return _pick(PROXIES, opts["nginx_mode"], "--nginx-mode")(opts)


def steps(opts: Opts, runtime_: bool = False, proxy_: bool = False, lazy_runtime: bool = False,
          ping: bool = True) -> Steps:
    """The steps layer with what the command uses, each backend pinged before anything is
    changed (``lazy_runtime``: the runtime only when needed; ``ping`` False: nothing yet)."""
    from bluegreen.flow.steps import Steps

    if not str(opts.get("check_interval", "1s")).rstrip("sm").isdigit():
        raise UsageError(f"invalid --check-interval {opts['check_interval']!r}: use e.g. 1s")
    reg = registry(opts)
    rt = runtime(opts) if runtime_ else None
    px = proxy(opts) if proxy_ else None
    if ping:
        reg.ping()
        if rt and not lazy_runtime:
            rt.ping()
        if px:
            px.ping()
    return Steps(registry=reg, runtime=rt, proxy=px, dry_run=bool(opts["dry_run"]),
                 check_interval=opts["check_interval"], health_timeout=opts["health_timeout"],
                 drain_timeout=opts["drain_timeout"])
