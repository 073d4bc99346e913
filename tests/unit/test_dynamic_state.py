"""bluegreen.proxy.dynamic_state: the state file as a base and a journal of changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bluegreen.errors import OperationFailed
from bluegreen.proxy import dynamic_state as ds


def servers(port: int, color: str | None = None) -> list[dict]:
    return [{"address": "10.0.0.1", "port": port, "weight": 100} | ({"color": color} if color else {})]


def doc_of(services: dict, chains: dict | None = None, colors: dict | None = None,
           locations: dict | None = None) -> dict:
    return {"services": services, "chains": chains or {}, "colors": colors or {},
            "locations": locations or {}}


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "routes.json"
    ds.rewrite(str(path), doc_of({"web": servers(80), "api": servers(81)}))
    ds.keep_last_good(str(path))
    return path


def journal(path) -> str:
    return Path(ds.journal_path(path)).read_text()


def test_a_change_is_one_line_in_the_journal_and_the_base_stays(state):
    base = state.read_text()
    undo = ds.record(str(state), ds.read_document(state), {"web": servers(90)}, {},
                     {"web": {"color": "green", "weight": 100}})
    assert state.read_text() == base
    lines = journal(state).splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == {
        "base": ds.base_id_of(state), "services": {"web": servers(90)},
        "colors": {"web": {"color": "green", "weight": 100}}}
    assert ds.read_document(state) == doc_of({"web": servers(90), "api": servers(81)},
                                             colors={"web": {"color": "green", "weight": 100}})
    undo()  # refused by nginx: cut off again
    assert journal(state) == "" and ds.read_document(state) == doc_of(
        {"web": servers(80), "api": servers(81)})


def test_a_line_sets_exactly_what_it_names_and_drops(state):
    chains = {"web": [{"side": "new", "color": "blue", "callers": ["10.0.0.9"], "servers": []}]}
    ds.record(str(state), ds.read_document(state), {"web": servers(90)}, chains,
              {"web": {"color": "blue", "weight": 100}})
    ds.record(str(state), ds.read_document(state), {"web": servers(91)}, {}, {})
    assert ds.read_document(state) == doc_of({"web": servers(91), "api": servers(81)})
    doc = ds.read_document(state)
    ds.apply_change(doc, {"services": {}, "drop": ["api"]})
    assert doc == doc_of({"web": servers(91)})


def test_the_release_goes_into_the_line_for_nginx(state):
    both = [*servers(90, "blue"),
            {"address": "10.0.0.2", "port": 91, "weight": 100, "color": "green"}]
    ds.record(str(state), ds.read_document(state), {"web": both}, {},
              {"web": {"color": "green", "weight": 20, "sticky": True}})
    entry = json.loads(journal(state))
    assert entry["releases"] == {"web": {"new": "green", "weight": 20, "sticky": True}}


def test_a_line_cut_short_is_skipped_and_the_next_change_rewrites(state):
    ds.record(str(state), ds.read_document(state), {"web": servers(90)}, {}, {})
    with open(ds.journal_path(state), "a") as fh:
        fh.write('{"base": "')  # a write that stopped halfway (the change was never sent)
    assert ds.read_document(state)["services"]["web"] == servers(90)
    old_id = ds.base_id_of(state)
    ds.record(str(state), ds.read_document(state), {"api": servers(95)}, {}, {})
    assert ds.base_id_of(state) != old_id and journal(state) == ""
    assert ds.read_document(state) == doc_of({"web": servers(90), "api": servers(95)})


def test_lines_of_another_base_are_skipped(state):
    """A rewrite that stopped before emptying the journal: its lines are in the new base."""
    ds.record(str(state), ds.read_document(state), {"web": servers(90)}, {}, {})
    left = journal(state)
    ds.rewrite(str(state), ds.read_document(state))
    with open(ds.journal_path(state), "w") as fh:
        fh.write(left)  # as if the journal had not been emptied
    ds.record(str(state), ds.read_document(state), {"web": servers(70)}, {}, {})
    assert ds.read_document(state)["services"]["web"] == servers(70)


def test_a_damaged_line_inside_the_journal_is_an_error_naming_it(state):
    ds.record(str(state), ds.read_document(state), {"web": servers(90)}, {}, {})
    ds.record(str(state), ds.read_document(state), {"web": servers(91)}, {}, {})
    lines = journal(state).splitlines()
    for bad in ("not json", '{"services": [], "base": "x"}', '{"services": {}, "extra": 1}'):
        with open(ds.journal_path(state), "w") as fh:
            fh.write("\n".join([bad, lines[1]]) + "\n")
        with pytest.raises(OperationFailed, match=r"journal .*routes.journal: line 1"):
            ds.read_document(state)


def test_a_journal_grown_past_its_base_is_rewritten_into_it(state, monkeypatch):
    monkeypatch.setattr(ds, "MIN_JOURNAL", 0)
    size = os.path.getsize(state)
    for port in range(1000, 1100):
        ds.record(str(state), ds.read_document(state), {"web": servers(port)}, {}, {})
        assert os.path.getsize(ds.journal_path(state)) <= size + 200
    assert ds.read_document(state)["services"]["web"] == servers(1099)


def test_the_last_good_copy_gets_the_confirmed_line_or_the_whole_pair(state):
    good = ds.last_good_path(state)
    undo = ds.record(str(state), ds.read_document(state), {"web": servers(90)}, {}, {})
    ds.keep_last_good(str(state), undo)
    assert journal(good) == journal(state) and ds.base_id_of(good) == ds.base_id_of(state)
    undo = ds.record(str(state), ds.read_document(state), {"web": servers(91)}, {}, {})
    undo()  # refused: the last good copy never sees it
    assert ds.read_document(good)["services"]["web"] == servers(90)
    ds.rewrite(str(state), ds.read_document(state))  # another base: copied whole
    undo = ds.record(str(state), ds.read_document(state), {"web": servers(92)}, {}, {})
    ds.keep_last_good(str(state), undo)
    assert Path(good).read_text() == state.read_text() and journal(good) == journal(state)
    assert ds.read_document(good) == ds.read_document(state)


def test_a_base_without_an_id_is_rewritten_at_the_first_change(tmp_path):
    """A state file of an older bluegreen: no id, so no journal line can name it."""
    path = tmp_path / "routes.json"
    path.write_text(json.dumps({"services": {"web": servers(80)}, "colors": {}}))
    ds.record(str(path), ds.read_document(path), {"api": servers(81)}, {}, {})
    assert ds.base_id_of(path) and journal(path) == ""
    assert ds.read_document(path) == doc_of({"web": servers(80), "api": servers(81)})


def test_a_read_that_a_rewrite_overtakes_is_made_again(state, monkeypatch):
    """A reader between a base and its journal while a writer rewrites both: it would see the
    old base with the journal emptied (the changes lost), so it reads again."""
    ds.record(str(state), ds.read_document(state), {"web": servers(90)}, {}, {})
    real = ds.read_text
    rewritten = []

    def read_text(path):
        if str(path).endswith(".journal") and not rewritten:
            rewritten.append(True)  # the writer gets in between the two reads
            ds.rewrite(str(state), ds.read_document(state))
        return real(path)

    monkeypatch.setattr(ds, "read_text", read_text)
    assert ds.read_document(state)["services"]["web"] == servers(90)


def test_a_lost_journal_is_damage_not_an_older_state(state):
    """A base with an id always has its journal (made first): one deleted would silently
    take back every change since the base, so the state reads as damaged."""
    ds.record(str(state), ds.read_document(state), {"web": servers(90)}, {}, {})
    os.unlink(ds.journal_path(state))
    with pytest.raises(OperationFailed, match=r"its journal .*routes.journal is missing"):
        ds.read_document(state)
    good = ds.last_good_path(state)  # the last good copy's lost journal: copied whole again
    ds.rewrite(str(state), doc_of({"web": servers(91)}))
    ds.keep_last_good(str(state))
    ds.keep_last_good(str(state), ds.record(str(state), ds.read_document(state),
                                            {"web": servers(92)}, {}, {}))
    os.unlink(ds.journal_path(good))
    ds.keep_last_good(str(state), ds.record(str(state), ds.read_document(state),
                                            {"api": servers(93)}, {}, {}))
    assert ds.read_document(good) == doc_of({"web": servers(92), "api": servers(93)})


def test_a_read_replays_only_the_lines_added_since_the_last_and_sees_every_other_change(
        state, monkeypatch):
    ds.record(str(state), ds.read_document(state), {"web": servers(90)}, {}, {})
    ds.read_document(state)
    replayed: list[int] = []
    real = ds.apply_change
    monkeypatch.setattr(ds, "apply_change", lambda doc, entry: replayed.append(1) or real(doc, entry))
    ds.record(str(state), ds.read_document(state), {"api": servers(91)}, {}, {})
    assert replayed == [] and ds.read_document(state)["services"] == {
        "web": servers(90), "api": servers(91)} and replayed == [1]  # the new line alone
    # another process's view: the journal cut back (a refused change), a damaged line added,
    # the base rewritten
    cut = journal(state).splitlines(keepends=True)
    Path(ds.journal_path(state)).write_text(cut[0])
    assert ds.read_document(state)["services"] == {"web": servers(90), "api": servers(81)}
    Path(ds.journal_path(state)).write_text(cut[0] + "not json\n")
    with pytest.raises(OperationFailed, match=r"routes.journal: line 2"):
        ds.read_document(state)
    ds.rewrite(str(state), doc_of({"web": servers(70)}))
    assert ds.read_document(state)["services"] == {"web": servers(70)}
