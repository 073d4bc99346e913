from __future__ import annotations

import pytest

from bluegreen import model, validate
from bluegreen.errors import UsageError


@pytest.mark.parametrize("name", ["books-ms", "a", "svc.v2", "x_y", "a" * 63, "0abc"])
def test_good_service_names(name):
    assert validate.service(name) == name


@pytest.mark.parametrize("name", ["", "Books", "-x", ".x", "a..b", "a" * 64, "x; touch /tmp/pwned",
                                  "$(id)", "a/b", "a b", "a\nb", "a}", "../etc", "é"])
def test_bad_service_names(name):
    with pytest.raises(UsageError):
        validate.service(name)


def test_colors():
    assert validate.color("blue") == "blue"
    assert model.other_color("blue") == "green"
    assert model.other_color("green") == "blue"
    for bad in ("", "red", "Blue", "blue "):
        with pytest.raises(UsageError):
            validate.color(bad)


@pytest.mark.parametrize("ref", ["busybox", "books-ms:1.0", "10.100.198.200:5000/books-ms",
                                 "localhost/x:y", "registry.example.com/team/app:v1.2_3",
                                 "app@sha256:" + "a" * 64, "vfarcic/books-ms"])
def test_good_images(ref):
    assert validate.image(ref) == ref


@pytest.mark.parametrize("ref", ["", "UPPER/case", "Upper", "a b", "x;rm", "x:tag with space",
                                 "x:" + "t" * 129, "-x", "x//y", "$(id)"])
def test_bad_images(ref):
    with pytest.raises(UsageError):
        validate.image(ref)


def test_numbers():
    assert validate.port("8080") == 8080
    assert validate.scale(3) == 3
    assert validate.weight("0") == 0 and validate.weight(100) == 100
    for fn, bad in ((validate.port, "0"), (validate.port, "65536"), (validate.port, "8o"),
                    (validate.scale, 0), (validate.scale, 65), (validate.weight, -1),
                    (validate.weight, 101), (validate.weight, "1.5")):
        with pytest.raises(UsageError):
            fn(bad)
    with pytest.raises(UsageError):
        validate.seconds("nan", "x")
    with pytest.raises(UsageError):
        validate.seconds("-1", "x")


@pytest.mark.parametrize("loc", ["/", "/api/v1/books", "/a-b_c.d~e/"])
def test_good_locations(loc):
    assert validate.location(loc) == loc


@pytest.mark.parametrize("loc", ["", "api", "/a;b", "/a b", "/a{", "/a}", "/a\n", "//x",
                                 "/a/../b", "/$x", "/a'b"])
def test_bad_locations(loc):
    with pytest.raises(UsageError):
        validate.location(loc)


def test_env_pairs_and_prefixes():
    assert validate.env_pair("DB=mongo:27017") == ("DB", "mongo:27017")
    assert validate.env_pair("E=") == ("E", "")
    for bad in ("noeq", "1X=y", "A-B=1", "=x"):
        with pytest.raises(UsageError):
            validate.env_pair(bad)
    assert validate.kv_prefix("") == "" and validate.kv_prefix("team/prod/") == "team/prod/"
    for bad in ("x", "/x/", "../x/", "a b/"):
        with pytest.raises(UsageError):
            validate.kv_prefix(bad)


def test_hosts():
    assert validate.host("127.0.0.1") == "127.0.0.1"
    assert validate.host("prod") == "prod"
    for bad in ("a b", "x;y", "", "a/b"):
        with pytest.raises(UsageError):
            validate.host(bad)


def test_next_color_is_the_books_rule():
    # get-color.sh: blue -> green; green or nothing (first deployment) -> blue
    assert model.next_color("blue") == "green"
    assert model.next_color("green") == "blue"
    assert model.next_color(None) == "blue"


def test_ipv4_as_ipaddress_reads_it():
    import ipaddress

    for text in ["1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3", "1.2.3.4.5",
                 "256.1.1.1", "1.2.3.04", " 1.2.3.4", "1.2.3.4\x00", "0x1.2.3.4", "::1",
                 "\u0661.2.3.4", "", "localhost", "1.2.3.4 ", "+1.2.3.4", "1..3.4",
                 "1.2.3.4\n", "1.2.3.1000", "00.1.2.3"]:
        try:
            expected = str(ipaddress.IPv4Address(text))
        except ValueError:
            expected = None
        assert validate.ipv4(text) == expected, text
