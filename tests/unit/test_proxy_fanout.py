"""Several proxies as one (``proxy/fanout.py``) over reload-mode proxies with a controller
double, and the ``--proxy`` option's parsing and validation (``settings.proxy_specs``);
``--partial``: proxies set aside, the proxies-behind record (``flow/behind.py``)."""

from __future__ import annotations

import pytest

from bluegreen import settings
from bluegreen.errors import OperationFailed, Unreachable, UsageError
from bluegreen.flow import behind
from bluegreen.flow.records import Records
from bluegreen.flow.steps import Steps
from bluegreen.model import Instance, Route, Server
from bluegreen.proxy.base import Proxy
from bluegreen.proxy.fanout import FanoutProxy
from bluegreen.proxy.nginx import NginxProxy
from bluegreen.registry.file import FileRegistry
from tests.unit.test_proxy import Controller


def nginx(tmp_path, name: str, reload_fails: bool = False) -> NginxProxy:
    up, inc = tmp_path / name / "up", tmp_path / name / "inc"
    return NginxProxy(Controller([up, inc], reload_fails), up, inc)


def blue_green(color: str, weight: int = 100) -> list[Route]:
    servers = (Server("127.0.0.1", 9001 if color == "blue" else 9002, None),)
    if weight < 100:
        servers = (Server("127.0.0.1", 9002, 3), Server("127.0.0.1", 9001, 1))
    return [Route("books-ms", color, servers, weight)]


@pytest.fixture
def fan(tmp_path) -> FanoutProxy:
    return FanoutProxy([("a", nginx(tmp_path, "a")), ("b", nginx(tmp_path, "b"))])


def test_applies_to_every_proxy(fan):
    assert fan.apply(blue_green("blue")) is True
    assert [p.serving("books-ms").color for _n, p in fan.proxies] == ["blue", "blue"]
    assert fan.apply(blue_green("blue")) is False
    assert fan.disagreements("books-ms") == []


def test_a_failure_puts_the_changed_proxies_back_and_names_the_proxy(fan, tmp_path):
    fan.apply(blue_green("green", 75))
    before = fan.proxies[0][1].current("books-ms")
    fan.proxies[1][1].controller.reload_fails = True
    with pytest.raises(OperationFailed, match=r"^proxy b: .*proxy a put back as it was"):
        fan.apply(blue_green("blue"))
    assert fan.proxies[0][1].current("books-ms") == before  # weights included
    assert fan.serving("books-ms").weight == 75


def test_disagreements_and_repair(fan):
    fan.apply(blue_green("blue"))
    fan.proxies[1][1].apply(blue_green("green"))
    (line,) = fan.disagreements("books-ms")
    assert "a routes books-ms to blue 100%" in line and "b to green 100%" in line
    assert fan.repair("books-ms", lambda s: s.color == "green", recorded="green") == [
        "proxy a routed like proxy b: green 100% (127.0.0.1:9002)"]
    assert fan.disagreements("books-ms") == []


def test_the_record_and_one_proxy_win_over_the_other(fan):
    fan.apply(blue_green("blue"))
    fan.proxies[0][1].apply(blue_green("green"))  # a switched behind the record's back
    healthy = lambda s: True  # noqa: E731
    assert fan.repair("books-ms", healthy, recorded="blue") == [
        "proxy a routed like proxy b: blue 100% (127.0.0.1:9001)"]
    assert fan.disagreements("books-ms") == []


def test_no_record_and_no_majority_repairs_nothing(fan):
    fan.apply(blue_green("blue"))
    fan.proxies[1][1].apply(blue_green("green"))
    (line,) = fan.repair("books-ms", lambda s: True, recorded=None)
    assert "neither the record (none) nor a majority" in line
    assert [p.serving("books-ms").color for _n, p in fan.proxies] == ["blue", "green"]
    (line,) = fan.repair("books-ms", lambda s: s.color != "green", recorded="green")
    assert "neither the record (green)" in line  # the record's color is not healthy


def test_a_strict_majority_wins_when_the_record_is_not_healthy(tmp_path):
    fan = FanoutProxy([(n, nginx(tmp_path, n)) for n in "abc"])
    fan.apply(blue_green("green"))
    fan.proxies[0][1].apply(blue_green("blue"))
    assert fan.winner("books-ms", "blue", lambda s: s.color == "green")[0] == "b"
    assert fan.repair("books-ms", lambda s: s.color == "green", recorded="blue") == [
        "proxy a routed like proxy b: green 100% (127.0.0.1:9002)"]
    assert fan.winner("books-ms", None, lambda s: s.color == "blue") is None  # unhealthy


def test_diff_names_each_proxy(fan):
    assert fan.diff(blue_green("blue")).count("proxy ") == 2


def test_proxy_specs():
    assert settings.proxy_specs(["edge=dynamic,control=127.0.0.1:9000,routing=table",
                                 {"name": "b", "mode": "local", "conf": "/b/nginx.conf"}]) == [
        ("edge", "dynamic", {"nginx_control": "127.0.0.1:9000", "nginx_routing": "table"}),
        ("b", "local", {"nginx_conf": "/b/nginx.conf"})]


@pytest.mark.parametrize("item, message", [
    ("a=dynamic,colour=x", "unknown key 'colour'"),
    ("a=fast", "invalid --proxy a mode 'fast'"),
    ("A B=local", "invalid --proxy name"),
    ("a=local,conf", "is not KEY=VALUE"),
    ({"name": "a", "mode": "local", "conf": 3}, "invalid conf 3"),
])
def test_proxy_specs_refuse(item, message):
    with pytest.raises(UsageError, match=message):
        settings.proxy_specs([item])


def test_two_proxies_never_share_files(tmp_path):
    opts = {"proxy": ["a=local", "b=local"], "upstream_dir": str(tmp_path),
            "include_dir": str(tmp_path), "nginx_mode": "local"}
    with pytest.raises(UsageError, match="same upstream-dir"):
        settings.proxy(opts)
    with pytest.raises(UsageError, match="given twice"):
        settings.proxy_specs(["a=local", "a=dynamic"])


# -- --partial: one proxy unreachable ------------------------------------------------------


class Flaky(Proxy):
    """A reload-mode proxy that can be made unreachable: every call then raises
    ``Unreachable``, as a stopped nginx's control endpoint does; :meth:`lose_at` makes it
    unreachable at a chosen call (by what is called, never by time)."""

    def __init__(self, inner: NginxProxy) -> None:
        self.inner, self.down, self.where = inner, False, "flaky"
        self._lose: list = []  # [call, how many more of it answer]

    def lose_at(self, call: str, nth: int = 1) -> None:
        """Unreachable from the ``nth`` call of ``call`` on (that call does not answer)."""
        self._lose = [call, nth]

    def _up(self, call: str) -> NginxProxy:
        if self._lose and self._lose[0] == call:
            self._lose[1] -= 1
            if self._lose[1] == 0:
                self.down, self._lose = True, []
        if self.down:
            raise Unreachable("nginx", "flaky", "not running")
        return self.inner

    def ping(self):
        self._up("ping").ping()

    def serving(self, service):
        return self._up("serving").serving(service)

    def current(self, service):
        return self._up("current").current(service)

    def apply(self, routes):
        return self._up("apply").apply(routes)

    def diff(self, routes):
        return self._up("diff").diff(routes)

    def exposures(self):
        return self._up("exposures").exposures()

    def disagreements(self, service):
        return self._up("disagreements").disagreements(service)

    def repair(self, service, trusted, recorded=None):
        return self._up("repair").repair(service, trusted, recorded)

    def drain(self, timeout):
        self._up("drain")
        return True


def flaky_pair(tmp_path, partial: bool) -> tuple[FanoutProxy, Flaky, Flaky]:
    a, b = Flaky(nginx(tmp_path, "a")), Flaky(nginx(tmp_path, "b"))
    fan = FanoutProxy([("a", a), ("b", b)], partial=partial)
    fan.apply(blue_green("blue"))
    return fan, a, b


def test_without_partial_one_proxy_down_refuses_and_names_partial(tmp_path):
    fan, a, b = flaky_pair(tmp_path, partial=False)
    b.down = True
    with pytest.raises(Unreachable, match=r"^proxy b \(nginx\) unreachable.*--partial"):
        fan.ping()
    with pytest.raises(Unreachable, match="--partial"):
        fan.apply(blue_green("green"))
    assert a.serving("books-ms").color == "blue"  # nothing changed on a
    assert fan.missed() == {}


def test_partial_changes_the_reachable_proxies_and_keeps_what_the_others_missed(tmp_path):
    fan, a, b = flaky_pair(tmp_path, partial=True)
    b.down = True
    fan.ping()  # b set aside, not an error
    assert set(fan.skipped()) == {"b"}
    assert fan.apply(blue_green("green", 75)) is True
    assert fan.apply(blue_green("green")) is True
    assert a.serving("books-ms").color == "green"
    assert fan.disagreements("books-ms") == []  # b is not read
    assert fan.serving("books-ms").color == "green"
    (route,) = fan.missed()["b"]  # the last route per service
    assert (route.color, route.weight) == ("green", 100)
    assert fan.missed() == {}  # taken once
    b.down = False
    assert b.serving("books-ms").color == "blue"  # it kept what it had
    assert fan.bring_in_line("b", [route]) is None  # set aside for this command
    fan.down.clear()
    assert fan.bring_in_line("b", [route]) is True
    assert b.serving("books-ms").color == "green"
    assert fan.disagreements("books-ms") == []


def test_partial_sets_aside_a_proxy_lost_during_the_change(tmp_path):
    fan, a, b = flaky_pair(tmp_path, partial=True)
    fan.ping()
    b.down = True  # after the ping: found at the change itself
    assert fan.apply(blue_green("green")) is True
    assert a.serving("books-ms").color == "green" and set(fan.missed()) == {"b"}


def test_partial_with_every_proxy_down_is_unreachable(tmp_path):
    fan, a, b = flaky_pair(tmp_path, partial=True)
    a.down = b.down = True
    with pytest.raises(Unreachable, match=r"^proxy b \(nginx\) unreachable") as caught:
        fan.ping()
    assert "--partial" not in str(caught.value)  # given, and none is left
    with pytest.raises(Unreachable):
        fan.apply(blue_green("green"))
    assert fan.missed() == {}


def test_partial_reads_start_with_the_first_reachable_proxy(tmp_path):
    fan, a, _b = flaky_pair(tmp_path, partial=True)
    fan.proxies[1][1].apply(blue_green("green"))
    a.down = True
    assert fan.serving("books-ms").color == "green"
    assert fan.current("books-ms").color == "green"
    assert set(fan.skipped()) == {"a"}


def test_a_proxy_held_back_never_counts_in_the_majority(tmp_path):
    fan = FanoutProxy([(n, nginx(tmp_path, n)) for n in "abc"])
    fan.apply(blue_green("blue"))
    for i in (1, 2):
        fan.proxies[i][1].apply(blue_green("green"))
    healthy = lambda s: True  # noqa: E731
    assert fan.winner("books-ms", None, healthy)[2].color == "green"  # b and c: a majority
    fan.hold_back({"b"})
    assert fan.winner("books-ms", None, healthy) is None  # c alone is no majority of a, c
    assert fan.winner("books-ms", "blue", healthy)[0] == "a"  # the record's color
    fan.hold_back({"a"})
    assert fan.winner("books-ms", "blue", healthy)[0] == "b"  # a behind never wins for blue
    assert fan.winner("books-ms", "blue", healthy)[2].color == "green"


def test_proxies_behind_recorded_reported_and_brought_in_line(tmp_path):
    """flow/behind.py over a file registry: a change b missed is recorded (merged per
    service, since kept), reported, applied to b once it answers, and the record deleted."""
    fan, _a, b = flaky_pair(tmp_path, partial=True)
    said: list[str] = []
    reg = FileRegistry(tmp_path / "state.json")
    steps = Steps(registry=reg, proxy=fan, say=said.append)
    records = Records(reg, said.append)
    b.down = True
    fan.ping()
    with behind.watch(steps, records, "books-ms") as caught_up:
        assert caught_up == []
        assert steps.on_behind is not None
        fan.apply(blue_green("green", 75))
        steps.on_behind(fan.missed())
        first = reg.get_json("books-ms", "proxies-behind")["proxies"]["b"]["since"]
        fan.apply(blue_green("green"))
        steps.on_behind(fan.missed())
    assert steps.on_behind is None
    entry = reg.get_json("books-ms", "proxies-behind")["proxies"]["b"]
    assert entry["since"] == first  # since it first fell behind
    assert [(r["color"], r["weight"]) for r in entry["routes"]] == [("green", 100)]
    (line,) = behind.problems(records, "books-ms")
    assert line.startswith("proxy b is behind since ") and "books-ms to green 100%" in line
    assert any("proxy b left behind" in s for s in said)

    fan.down.clear()  # the next command: b answers again
    b.down = False
    with behind.watch(steps, records, "books-ms") as caught_up:
        (line,) = caught_up
        assert line.startswith("proxy b, behind since") and "brought in line" in line
    assert b.serving("books-ms").color == "green"
    assert reg.get_json("books-ms", "proxies-behind") is None
    assert behind.problems(records, "books-ms") == []


def test_a_proxy_still_down_stays_recorded_and_held_back(tmp_path):
    fan, _a, b = flaky_pair(tmp_path, partial=True)
    reg = FileRegistry(tmp_path / "state.json")
    reg.put_json("books-ms", "proxies-behind", {"proxies": {"b": {
        "since": 1.0, "routes": [behind.route_json(blue_green("green")[0])]}}})
    b.down = True
    fan.ping()
    steps = Steps(registry=reg, proxy=fan, say=lambda _line: None)
    with behind.watch(steps, Records(reg, lambda _line: None), "books-ms") as caught_up:
        assert caught_up == [] and fan.held == {"b"}
    assert reg.get_json("books-ms", "proxies-behind")["proxies"]["b"]["since"] == 1.0
    assert behind.route_of(behind.route_json(blue_green("green", 75)[0])) == \
        blue_green("green", 75)[0]


def test_a_route_behind_keeps_its_servers_colors_and_stickiness():
    route = Route("books-ms", "green", (Server("127.0.0.1", 9002, 3, "green"),
                                        Server("127.0.0.1", 9001, 1, "blue")), 75, sticky=True)
    assert behind.route_of(behind.route_json(route)) == route
    older = behind.route_json(route) | {"servers": [["127.0.0.1", 9002, 3]]}
    assert behind.route_of(older).servers == (Server("127.0.0.1", 9002, 3),)


# -- --partial: a proxy lost between the ping and a read or a repair -------------------------

healthy = lambda s: True  # noqa: E731


def flaky_fan(tmp_path, colors: str, partial: bool) -> tuple[FanoutProxy, list[Flaky]]:
    """One flaky proxy per letter of ``colors`` (b: blue, g: green), named a, b, c..., pinged."""
    proxies = [Flaky(nginx(tmp_path, name)) for name in "abc"[:len(colors)]]
    fan = FanoutProxy(list(zip("abc", proxies, strict=False)), partial=partial)
    for proxy, color in zip(proxies, colors, strict=True):
        proxy.apply(blue_green("blue" if color == "b" else "green"))
    fan.ping()
    return fan, proxies


def colors(proxies: list[Flaky]) -> list[str | None]:
    return [p.inner.serving("books-ms").color for p in proxies]


def test_winner_lost_proxy_without_partial_names_partial(tmp_path):
    fan, (_a, _b, c) = flaky_fan(tmp_path, "bgg", partial=False)
    c.lose_at("serving")
    with pytest.raises(Unreachable, match=r"^proxy c \(nginx\) unreachable.*--partial"):
        fan.winner("books-ms", None, healthy)


def test_winner_counts_a_proxy_lost_while_asked_in_the_majority_total(tmp_path):
    fan, (_a, _b, c) = flaky_fan(tmp_path, "bgg", partial=True)
    assert fan.winner("books-ms", None, healthy)[0] == "b"  # b and c: 2 of 3
    c.lose_at("serving")
    assert fan.winner("books-ms", None, healthy) is None  # b alone: 1 of 3, c still counted
    assert set(fan.skipped()) == {"c"}
    assert fan.winner("books-ms", "blue", healthy)[0] == "a"  # the record's color still wins


def test_winner_a_lost_proxy_leaves_a_majority_that_counts_it(tmp_path):
    fan, (a, _b, _c) = flaky_fan(tmp_path, "bgg", partial=True)
    a.lose_at("serving")
    assert fan.winner("books-ms", "blue", healthy)[0] == "b"  # green: 2 of 3; a not asked
    assert set(fan.skipped()) == {"a"}


@pytest.mark.parametrize("call", ["repair", "serving", "apply"])
def test_repair_without_partial_a_proxy_lost_fails_naming_partial(tmp_path, call):
    fan, (a, b) = flaky_fan(tmp_path, "bg", partial=False)
    b.lose_at(call)
    with pytest.raises(Unreachable, match=r"^proxy b \(nginx\) unreachable.*--partial"):
        fan.repair("books-ms", healthy, recorded="blue")
    assert colors([a]) == ["blue"] and fan.missed() == {}


@pytest.mark.parametrize("call", ["repair", "serving", "apply"])
def test_repair_partial_sets_aside_a_proxy_lost_and_keeps_what_it_missed(tmp_path, call):
    """b routes green against the record (blue) and a: lost at its own repair, while the
    winner is read, or at the change itself, it missed the winning route."""
    fan, (a, b) = flaky_fan(tmp_path, "bg", partial=True)
    b.lose_at(call)
    assert fan.repair("books-ms", healthy, recorded="blue") == []  # nothing changed on a
    assert set(fan.skipped()) == {"b"} and colors([a, b]) == ["blue", "green"]
    (route,) = fan.missed()["b"]
    assert route == a.current("books-ms")
    b.down = False
    assert fan.disagreements("books-ms") == []  # b is not read again in this command


def test_repair_partial_the_winners_proxy_lost_the_next_one_wins(tmp_path):
    fan, (a, b, c) = flaky_fan(tmp_path, "ggb", partial=True)
    a.lose_at("current")  # the winner's route, read after the winner was chosen
    assert fan.repair("books-ms", healthy, recorded="green") == [
        "proxy c routed like proxy b: green 100% (127.0.0.1:9002)"]
    assert colors([b, c]) == ["green", "green"]
    (route,) = fan.missed()["a"]
    assert route.color == "green"


def test_repair_partial_a_proxy_set_aside_before_misses_a_change_only(tmp_path):
    fan, (_a, b, c) = flaky_fan(tmp_path, "bgb", partial=True)
    c.down = True
    fan.ping()  # c set aside at the ping, before the repair
    fan.repair("books-ms", healthy, recorded="blue")  # b routed like a: a change c missed
    assert colors([b]) == ["blue"]
    assert [r.color for r in fan.missed()["c"]] == ["blue"]
    assert fan.repair("books-ms", healthy, recorded="blue") == []
    assert fan.missed() == {}  # no change: nothing missed


def test_repair_partial_with_no_winner_keeps_nothing(tmp_path):
    fan, (a, b) = flaky_fan(tmp_path, "bg", partial=True)
    assert fan.repair("books-ms", healthy, recorded=None)[0].startswith("proxies disagree")
    b.lose_at("serving")  # no record, a alone is no majority of 2: no winning route to keep
    assert fan.repair("books-ms", healthy, recorded=None) == []
    assert set(fan.skipped()) == {"b"} and fan.missed() == {}
    assert colors([a, b]) == ["blue", "green"]


@pytest.mark.parametrize("partial", [False, True])
def test_drain_and_disagreements_a_proxy_lost_while_asked(tmp_path, partial):
    fan, (_a, b) = flaky_fan(tmp_path, "bb", partial=partial)
    b.lose_at("drain")
    if partial:
        assert fan.drain(1.0) is True and set(fan.skipped()) == {"b"}
    else:
        with pytest.raises(Unreachable, match=r"^proxy b \(nginx\) unreachable.*--partial"):
            fan.drain(1.0)
    fan, (_a, b) = flaky_fan(tmp_path, "bb", partial=partial)
    b.lose_at("disagreements")  # its own (a damaged state file): asked after serving
    assert fan.disagreements("books-ms") == []
    assert set(fan.skipped()) == ({"b"} if partial else set())


@pytest.mark.parametrize("call", ["exposures", "diff", "current"])
def test_other_reads_set_aside_a_proxy_lost_while_asked(tmp_path, call):
    fan, (a, b) = flaky_fan(tmp_path, "bb", partial=True)
    (b if call != "current" else a).lose_at(call)
    {"exposures": fan.exposures, "diff": lambda: fan.diff(blue_green("green")),
     "current": lambda: fan.current("books-ms")}[call]()
    assert len(fan.skipped()) == 1


def test_a_proxy_lost_during_a_repair_is_recorded_behind_like_one_lost_during_a_change(
        tmp_path):
    """Steps.repair under the target's watch (flow/behind.py): b, lost while the winner was
    read, is recorded in proxies-behind with the winning route, and the next command brings
    it in line."""
    fan, (a, b) = flaky_fan(tmp_path, "bg", partial=True)
    reg = FileRegistry(tmp_path / "state.json")
    reg.register(Instance("books-ms-blue-1", "books-ms", "blue", "127.0.0.1", 9001))
    said: list[str] = []
    steps = Steps(registry=reg, proxy=fan, say=said.append)
    records = Records(reg, said.append)
    b.lose_at("serving")
    with behind.watch(steps, records, "books-ms"):
        assert steps.repair("books-ms", "blue") == []
    entry = reg.get_json("books-ms", "proxies-behind")["proxies"]["b"]
    assert [(r["service"], r["color"], r["weight"]) for r in entry["routes"]] == [
        ("books-ms", "blue", 100)]
    assert any("proxy b left behind" in s for s in said)
    assert colors([a, b]) == ["blue", "green"]

    fan.down.clear()  # the next command: b answers again
    b.down = False
    with behind.watch(steps, records, "books-ms") as caught_up:
        (line,) = caught_up
        assert "brought in line" in line
    assert colors([a, b]) == ["blue", "blue"]
    assert reg.get_json("books-ms", "proxies-behind") is None


def test_a_proxy_lost_while_a_failed_change_is_put_back_is_recorded_behind(tmp_path):
    """A change fails at c (refused); b is put back; a, lost before it is put back, serves
    the new route: with --partial it is set aside and recorded in proxies-behind with the
    route it had (the one the record keeps), and the next command brings it back in line."""
    fan, (a, b) = flaky_fan(tmp_path, "bb", partial=True)
    c = nginx(tmp_path, "c")
    c.apply(blue_green("blue"))
    fan.proxies.append(("c", c))
    reg = FileRegistry(tmp_path / "state.json")
    for color, port in (("blue", 9001), ("green", 9002)):
        reg.register(Instance(f"books-ms-{color}-1", "books-ms", color, "127.0.0.1", port))
    reg.set_color("books-ms", "blue")
    said: list[str] = []
    steps = Steps(registry=reg, proxy=fan, say=said.append)
    records = Records(reg, said.append)
    c.controller.reload_fails = True
    a.lose_at("apply", 2)  # its change answers, its putting back does not
    with behind.watch(steps, records, "books-ms"), \
            pytest.raises(OperationFailed, match=r"^proxy c: .*proxy a became unreachable "
                                                 r"before it was put back: left behind"):
        steps.switch("books-ms", "green")
    assert colors([a, b]) == ["green", "blue"] and c.serving("books-ms").color == "blue"
    entry = reg.get_json("books-ms", "proxies-behind")["proxies"]["a"]
    assert [(r["service"], r["color"], r["weight"]) for r in entry["routes"]] == [
        ("books-ms", "blue", 100)]
    assert reg.get_color("books-ms") == "blue"

    fan.down.clear()  # the next command: a answers again
    a.down = False
    c.controller.reload_fails = False
    with behind.watch(steps, records, "books-ms") as caught_up:
        (line,) = caught_up
        assert "proxy a" in line and "brought in line" in line
    assert colors([a, b]) == ["blue", "blue"]
    assert reg.get_json("books-ms", "proxies-behind") is None


def test_stop_refuses_a_color_while_a_proxy_is_behind_unless_forced(tmp_path):
    """b recorded as behind (and still unreachable) may route either color when it answers
    again: stop refuses until it is brought in line, or with --force."""
    fan, _proxies = flaky_fan(tmp_path, "bg", partial=True)
    reg = FileRegistry(tmp_path / "state.json")
    steps = Steps(registry=reg, proxy=fan, say=lambda _line: None)
    fan.hold_back({"b"})
    with pytest.raises(OperationFailed, match=r"^books-ms-green: proxy b is behind \(--partial\) "
                                              r"and may still route it.*bluegreen recover books-ms"):
        steps.stop("books-ms", "green")
    fan.hold_back(set())
    with pytest.raises(AssertionError):  # past the check: no runtime in this test
        steps.stop("books-ms", "green")
