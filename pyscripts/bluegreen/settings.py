"""The composition root: which backend each name means, built from the resolved options.

A backend is one module behind its interface (``registry.base.Registry``,
``runtime.base.Runtime``, ``proxy.base.Proxy``); adding one is that module plus one row in a
table here. Nothing else names a backend class. Imports are lazy: a command builds only what
it uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bluegreen import validate
from bluegreen.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bluegreen.flow.steps import Steps
    from bluegreen.proxy.base import Proxy
    from bluegreen.registry.base import Registry
    from bluegreen.runtime.base import Runtime

    Opts = dict[str, Any]


def _consul(opts: Opts) -> Registry:
    from bluegreen.registry.consul import ConsulRegistry

    return ConsulRegistry(opts["consul_addr"], token=opts.get("consul_token"),
                          prefix=opts["kv_prefix"])


def consul_policy(prefix: str, services: list[str],
                  app: str | None) -> tuple[list[tuple[str, str, str]], str]:
    """The Consul ACL rules a deploy token needs, and the policy in HCL."""
    from bluegreen.registry import consul

    rules = consul.policy(prefix, services, app)
    return rules, consul.policy_hcl(rules)


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

    if opts.get("nginx_routing", "locations") != "locations":
        raise UsageError("--nginx-routing table needs --nginx-mode dynamic (a reloaded nginx "
                         "routes by its locations); with several proxies, give it to the "
                         "dynamic ones: --proxy NAME=dynamic,routing=table")

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
        _local_nginx(opts), os.path.join(upstream_dir, dynamic.INCLUDE_NAME),
        validate.directory(opts["include_dir"], "--include-dir"), opts["nginx_control"],
        opts["nginx_state_file"], location=opts["location"], include_file=_include_file(opts),
        internal_listen=internal_listen(opts),
        secret_file=opts.get("nginx_control_secret_file") or None,
        preview_secret=opts.get("preview_secret") or None,
        routing=opts.get("nginx_routing") or "locations"))


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


# --proxy NAME=MODE,KEY=VALUE: each key stands for one single-proxy option
PROXY_KEYS = {"conf": "nginx_conf", "prefix": "nginx_prefix", "pid-file": "nginx_pid_file",
              "bin": "nginx_bin", "container": "nginx_container", "upstream-dir": "upstream_dir",
              "include-dir": "include_dir", "control": "nginx_control",
              "state-file": "nginx_state_file", "control-secret-file": "nginx_control_secret_file",
              "routing": "nginx_routing"}


def proxy_specs(items: list[Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(name, mode, option overrides) of each ``--proxy`` item (text or a ``[[proxy]]`` table);
    unknown keys, modes and repeated names are refused by name."""
    specs: list[tuple[str, str, dict[str, str]]] = []
    for item in items:
        if isinstance(item, dict):
            fields = {str(k).replace("_", "-"): v for k, v in item.items()}
            name, mode = fields.pop("name", None), fields.pop("mode", None)
        elif isinstance(item, str):
            head, *rest = item.split(",")
            name, _, mode = head.partition("=")
            fields = {}
            for pair in rest:
                key, eq, value = pair.partition("=")
                if not eq:
                    raise UsageError(f"invalid --proxy {item!r}: {pair!r} is not KEY=VALUE")
                fields[key.strip()] = value
        else:
            raise UsageError(f"invalid --proxy {item!r}: use NAME=MODE[,KEY=VALUE...]")
        if not isinstance(name, str) or not validate.SERVICE_RE.fullmatch(name or ""):
            raise UsageError(f"invalid --proxy name {name!r}: lowercase letters, digits, '.', '_', '-'")
        _pick(PROXIES, mode, f"--proxy {name} mode")
        for key, value in fields.items():
            if key not in PROXY_KEYS:
                raise UsageError(f"--proxy {name}: unknown key {key!r}: use "
                                 f"{', '.join(PROXY_KEYS)}")
            if not isinstance(value, str) or not value or "\0" in value:
                raise UsageError(f"--proxy {name}: invalid {key} {value!r}")
        if name in (s[0] for s in specs):
            raise UsageError(f"--proxy {name} given twice")
        specs.append((name, mode, {PROXY_KEYS[k]: v for k, v in fields.items()}))
    return specs


def proxy(opts: Opts) -> Proxy:
    specs = proxy_specs(opts.get("proxy") or [])
    if not specs:
        return _pick(PROXIES, opts["nginx_mode"], "--nginx-mode")(opts)
    from bluegreen.proxy.fanout import FanoutProxy

    seen: dict[tuple[str, str], str] = {}
    for name, mode, overrides in specs:  # two proxies never share their files or endpoint
        full = opts | overrides
        owned = ["upstream_dir", "include_dir"] + (["nginx_control", "nginx_state_file"]
                                                   if mode == "dynamic" else [])
        for key in owned:
            other = seen.setdefault((key, str(full[key])), name)
            if other != name:
                raise UsageError(f"--proxy {name} and {other} have the same "
                                 f"{key.replace('_', '-')} {full[key]}: give each its own")
    return FanoutProxy([(name, PROXIES[mode](opts | overrides)) for name, mode, overrides in specs],
                       partial=bool(opts.get("partial")))


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
