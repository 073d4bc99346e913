"""bluegreen.templates: a rendered text keyed by what it was rendered from."""

from __future__ import annotations

from bluegreen import templates

NAME = "nginx/dynamic/http.conf.j2"
CONTEXT = {"services": ["web"], "control_listen": "127.0.0.1:9000", "control_path": "/c",
           "state_file": "/var/lib/bluegreen/routes.json", "lua_dir": "/usr/share/bluegreen",
           "dict_size": "1m", "figures_size": "1m", "endpoints": {},
           "internal_listen": "172.17.0.1:80",
           "last_good_file": "/var/lib/bluegreen/routes.last-good.json",
           "journal_file": "/var/lib/bluegreen/routes.journal",
           "last_good_journal_file": "/var/lib/bluegreen/routes.last-good.journal",
           "secret_file": "/var/lib/bluegreen/routes.secret",
           "preview_file": "/var/lib/bluegreen/routes.preview", "table": False,
           "table_file": "_bluegreen-table.conf"}


def test_a_keyed_text_is_current_for_the_same_context_only():
    text = templates.render_keyed(NAME, **CONTEXT)
    assert text.startswith(templates.KEY_PREFIX) and "upstream" in text
    assert templates.is_current(text, NAME, **CONTEXT)
    assert not templates.is_current(text, NAME, **(CONTEXT | {"services": ["web", "api"]}))
    assert not templates.is_current(text.split("\n", 1)[1], NAME, **CONTEXT)  # unkeyed
    assert not templates.is_current(None, NAME, **CONTEXT)


def test_the_key_is_one_short_line_at_any_number_of_services():
    """nginx refuses a line of 4 KiB: the key is a digest, not the context."""
    many = CONTEXT | {"services": [f"service-{i:04d}" for i in range(1000)]}
    key = templates.fingerprint(NAME, **many)
    assert len(key) < 60 and key != templates.fingerprint(NAME, **CONTEXT)
    assert max(len(line) for line in templates.render_keyed(NAME, **many).splitlines()) < 200


def test_the_key_follows_the_templates(tmp_path, monkeypatch):
    """A changed template (an upgrade) makes every keyed text stale."""
    import shutil

    copy = tmp_path / "resources"
    shutil.copytree(templates.resource_dir(), copy)
    monkeypatch.setenv("BLUEGREEN_RESOURCES", str(copy))
    before = templates.fingerprint(NAME, **CONTEXT)
    endpoint = copy / "nginx" / "endpoint-server.j2"  # included by the http template
    endpoint.write_text(endpoint.read_text() + "\n# changed\n")
    assert templates.fingerprint(NAME, **CONTEXT) != before
    before = templates.fingerprint(NAME, **CONTEXT)
    lua = copy / "nginx" / "dynamic" / "bluegreen_dynamic.lua"  # loaded by the rendered text
    lua.write_text(lua.read_text() + "\n-- changed\n")
    assert templates.fingerprint(NAME, **CONTEXT) != before
