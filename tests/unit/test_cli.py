"""CLI edges that need no running component: parsing, precedence, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bluegreen.cli import options
from bluegreen.errors import ExitStatus, UsageError
from bluegreen_dev.sandbox import free_port


def run(*args, env=None):
    import os

    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "bluegreen", *args], capture_output=True,
                       text=True, env=e, check=False, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_exit_status_values_are_documented():
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3, 4, 5, 6, 130, 143]


def test_usage_errors_are_one_line_exit_2():
    code, _, err = run("deploy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("bluegreen: error:")
    code, _, err = run("color", "sideways", "x")
    assert code == 2 and "invalid choice" in err


@pytest.mark.parametrize("action", ["promote", "abort", "rollback", "status", "history"])
def test_a_bad_application_name_is_refused_before_anything_is_contacted(action):
    """Consul is unreachable here: the name is checked first (exit 2, not 3)."""
    code, _, err = run("app", action, "x;y", env={"CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"})
    assert code == 2 and err.strip() == "bluegreen: error: invalid application name 'x;y'"


def test_consul_unreachable_is_exit_3_naming_where():
    port = free_port()
    code, _, err = run("color", "next", "books-ms", env={"CONSUL_HTTP_ADDR": f"127.0.0.1:{port}"})
    assert code == 3
    assert err.strip() == (f"bluegreen: error: Consul unreachable at http://127.0.0.1:{port}: "
                           "ConnectionRefusedError")


def test_file_registry_colors(tmp_path):
    env = {"BLUEGREEN_REGISTRY": "file", "BLUEGREEN_STATE_FILE": str(tmp_path / "s.json")}
    assert run("color", "next", "books-ms", env=env)[1] == "blue\n"
    assert run("color", "current", "books-ms", "--json", env=env)[1].count('"current": null') == 1


def test_precedence_flag_env_file_default(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('location = "/from-file"\nweight = 30\ndrain-timeout = 7\n')
    env = {"BLUEGREEN_LOCATION": "/from-env", "CONSUL_HTTP_ADDR": "consul:8500"}
    ns = options.parse(["switch", "svc", "--config", str(conf), "--weight", "40"])
    out = options.resolve(ns, env)
    assert out["location"] == "/from-env"  # env beats file
    assert out["weight"] == 40  # flag beats everything
    assert out["drain_timeout"] == 7  # file beats default
    assert out["consul_addr"] == "consul:8500"  # the ecosystem's variable
    assert out["health_timeout"] == 60.0  # default
    out = options.resolve(ns, env | {"BLUEGREEN_CONSUL_ADDR": "bg:1"})
    assert out["consul_addr"] == "bg:1"  # BLUEGREEN_* beats the ecosystem's


def test_env_lists_and_flags():
    http = next(o for o in options.OPTIONS if o.name == "http")
    pull = next(o for o in options.OPTIONS if o.name == "pull")
    assert options._from_text('["A=1", "B=2 3"]', http, "V") == ["A=1", "B=2 3"]
    assert options._from_text("A=1\nB=2", http, "V") == ["A=1", "B=2"]
    assert options._from_text("yes", pull, "V") is True
    with pytest.raises(UsageError):
        options._from_text("maybe", pull, "V")
    with pytest.raises(UsageError):
        options.load_file("/nonexistent.toml", {})


def test_config_file_refuses_unknown_keys_by_name(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('location = "/x"\nlocaton = "/typo"\n')
    with pytest.raises(UsageError, match="unsupported key 'locaton'"):
        options.load_file(str(conf), {})


def test_each_option_is_declared_once():
    names = [o.name for o in options.OPTIONS]
    assert len(names) == len(set(names))
    flags = [o.cli or f"--{o.name}" for o in options.OPTIONS]
    assert len(flags) == len(set(flags))
    for opt in options.OPTIONS:  # every option's commands exist
        assert set(opt.commands) <= set(options.COMMANDS), opt.name


def test_quick_commands_do_not_import_heavy_libraries(tmp_path):
    code = ("import sys; from bluegreen.cli import main; main(['color','next','x','--registry','file',"
            f"'--state-file','{tmp_path}/s.json']); "
            "print(sorted(m for m in ('docker','consul','jenkins','jinja2','argparse','locale') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_help_lists_every_command():
    _, out, _ = run("--help")
    for name in ("color", "deploy", "address", "switch", "stop", "status", "pre-test",
                 "post-test", "run", "rollback", "history", "recover", "jenkins", "app"):
        assert name in out


@pytest.mark.parametrize("steps", ["0,0,100", "50", "50,30,100", "10,x,100", "101", "", "10,0,100"])
def test_app_deploy_refuses_bad_steps(steps, tmp_path):
    compose = tmp_path / "c.yaml"
    compose.write_text("name: a\nservices:\n  s:\n    image: x:1\n    labels:\n"
                       "      bluegreen.route: /\n")
    code, out, err = run("app", "deploy", "--file", str(compose), "--steps", steps,
                         env={"CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"})
    assert code == 2 and "invalid --steps" in err and out == ""


@pytest.mark.parametrize("env", [{}, {"BLUEGREEN_PREVIEW_SECRET": "a-preview-secret-1234"},
                                 {"BLUEGREEN_NGINX_MODE": "dynamic"}])
def test_a_step_at_zero_needs_the_dynamic_nginx_and_a_preview_secret(env, tmp_path):
    compose = tmp_path / "c.yaml"
    compose.write_text("name: a\nservices:\n  s:\n    image: x:1\n    labels:\n"
                       "      bluegreen.route: /\n")
    for args in (("app", "deploy", "--file", str(compose)), ("run", "s", "--image", "x:1")):
        code, out, err = run(*args, "--steps", "0,100",
                             env={"CONSUL_HTTP_ADDR": f"127.0.0.1:{free_port()}"} | env)
        assert code == 2 and "a step at 0% reaches the new release by preview requests" in err
        assert "a-preview-secret" not in err + out


def _sample(opt: options.Option) -> str | None:
    """A value the option accepts, as text (None for a flag)."""
    if opt.kind == "flag":
        return None
    if opt.choices:
        return opt.choices[-1]
    return {"int": "7", "float": "2.5"}.get(opt.kind, f"v-{opt.name}")


@pytest.mark.parametrize("path", list(options.COMMANDS))
def test_the_parser_reads_every_command_as_argparse_does(path):
    """Each command with its positionals and every option it takes (a list option twice),
    options after the command: the same values as argparse's parser of the help."""
    args = path.split()
    for name, spec in options.COMMANDS[path].positionals:
        args.append(spec["choices"][0] if "choices" in spec else f"p-{name}")
    for opt in options.OPTIONS:
        if opt.flag and (not opt.commands or path in opt.commands):
            flag = opt.cli or f"--{opt.name}"
            value = _sample(opt)
            args += [flag] if value is None else [flag, value]
            if opt.kind == "list":
                args.append(f"{flag}=second")
    expected = {k: v for k, v in vars(options.build_parser().parse_args(args)).items()
                if v is not None}
    assert options.parse(args) == expected


def test_options_before_the_command_count():
    """argparse's subparsers drop what comes before the command: --dry-run there made a real
    rollback. Here it counts, as after the command."""
    assert options.parse(["--dry-run", "--consul-addr", "http://c:1", "rollback", "books"]) == {
        "command": "rollback", "service": "books", "dry_run": True, "consul_addr": "http://c:1"}
    assert options.resolve(options.parse(["--dry-run", "rollback", "books"]), {})["dry_run"]


@pytest.mark.parametrize("args, message", [
    ([], "the following arguments are required: COMMAND"),
    (["sideways"], "argument COMMAND: invalid choice: 'sideways'"),
    (["app"], "the following arguments are required: ACTION"),
    (["app", "promote"], "the following arguments are required: APP"),
    (["rollback", "a", "b"], "unrecognized arguments: b"),
    (["rollback", "a", "--weight", "3"], "--weight is not an option of rollback"),
    (["rollback", "a", "--lock-wait"], "argument --lock-wait: expected one argument"),
    (["rollback", "a", "--lock-wait", "--debug"], "argument --lock-wait: expected one argument"),
    (["rollback", "a", "--debug=yes"], "argument --debug: ignored explicit argument 'yes'"),
    (["rollback", "a", "-x"], "unrecognized arguments: -x"),
    (["rollback", "a", "--consul-token", "s3cret"], "--consul-token is a secret, read from "
                                                     "$CONSUL_HTTP_TOKEN"),
    (["run", "a", "--preview-secret", "s3cret"], "--preview-secret is a secret, read from "
                                                 "$BLUEGREEN_PREVIEW_SECRET"),
])
def test_a_bad_command_line_is_one_usage_error(args, message):
    with pytest.raises(UsageError) as err:
        options.parse(args)
    assert str(err.value).startswith(message) and "s3cret" not in str(err.value)


def test_the_preview_secret_reaches_the_dynamic_proxy(tmp_path):
    from bluegreen import settings

    opts = options.resolve(options.parse(["switch", "a"]), {
        "BLUEGREEN_PREVIEW_SECRET": "preview-secret-0123", "BLUEGREEN_NGINX_MODE": "dynamic",
        "BLUEGREEN_UPSTREAM_DIR": str(tmp_path), "BLUEGREEN_INCLUDE_DIR": str(tmp_path),
        "BLUEGREEN_NGINX_STATE_FILE": str(tmp_path / "routes.json")})
    engine = settings.proxy(opts).engine
    assert engine.preview_secret == "preview-secret-0123"
    assert engine.preview_file == str(tmp_path / "routes.preview")


def test_values_that_look_like_options():
    """``--`` ends the options; a negative number is a value (refused later by its range)."""
    assert options.parse(["color", "next", "--", "-svc"])["service"] == "-svc"
    assert options.parse(["switch", "a", "--weight", "-5"])["weight"] == "-5"
    with pytest.raises(UsageError, match="--weight"):
        options.resolve(options.parse(["switch", "a", "--weight", "-5"]), {})


@pytest.mark.parametrize("path", ["", "app", "jenkins", *options.COMMANDS])
def test_every_help_prints(path, capsys):
    """The help of the program, of each family and of each command (a ``%`` in a help text
    once broke ``app --help``)."""
    with pytest.raises(SystemExit) as done:
        options.parse([*path.split(), "--help"])
    assert done.value.code == 0 and "usage: bluegreen" in capsys.readouterr().out


def test_help_and_version_exit_0():
    code, out, _ = run("rollback", "--help")
    assert code == 0 and "--lock-wait" in out and "--weight" not in out
    code, out, _ = run("--version")
    assert code == 0 and out.startswith("bluegreen ")


class _PausedRelease:
    """A release that pauses after its first phase (what the Jenkins step's first call gets)."""

    def start(self, plan: object = None) -> dict[str, object]:
        return {"result": "paused", "paused_after": "deploy", "from": None, "to": "blue"}

    def resume(self) -> dict[str, object]:
        return self.start()


@pytest.mark.parametrize("args", [("--image", "books-ms:1", "--until", "deploy"),
                                  ("--resume", "--until", "pre-test")])
def test_run_json_names_every_phase_with_its_stage_title(args, tmp_path, monkeypatch, capsys):
    """blueGreenDeploy runs one stage per entry of ``stages``: model.PHASES in order, titled with
    the book's stage names (model.PHASE_TITLES); the backends are not reached here."""
    import json

    from bluegreen import model
    from bluegreen.cli import commands

    monkeypatch.chdir(tmp_path)  # no bluegreen.toml
    monkeypatch.setattr(commands, "_steps", lambda *a, **k: object())
    monkeypatch.setattr(commands, "_refuse_app_service", lambda steps, service: None)
    monkeypatch.setattr(commands, "_release", lambda *a: _PausedRelease())
    opts = options.resolve(options.parse(["run", "books-ms", *args, "--json"]), env={})
    assert commands.dispatch(opts) == ExitStatus.OK
    stages = json.loads(capsys.readouterr().out)["stages"]
    assert [s["name"] for s in stages] == list(model.PHASES)
    assert [s["title"] for s in stages] == ["Deploy", "Run pre-integration tests", "Update proxy",
                                            "Run post-integration tests"]
