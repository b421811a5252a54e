from __future__ import annotations

import pytest

from ukedge.build.guest import _tsc, host_tsc_khz
from ukedge.errors import UsageError
from ukedge.guest import guest_cmdline


def test_cmdline_appends_what_init_reads() -> None:
    line = guest_cmdline(
        "console=ttyS0 quiet",
        ip="10.0.2.15/24",
        gateway="10.0.2.2",
        dns="10.0.2.3",
        clock=1700000000.25,
        tsc_khz=2000000,
    )
    assert line == (
        "console=ttyS0 quiet ukedge.ip=10.0.2.15/24 ukedge.gw=10.0.2.2 ukedge.dns=10.0.2.3 "
        "tsc_early_khz=2000000 tsc=reliable ukedge.time=1700000000.250"
    )


def test_cmdline_of_a_snapshot_source_zeroes_freed_pages() -> None:
    source = guest_cmdline("quiet", ip=None, gateway=None, dns=None, snapshot_source=True)
    plain = guest_cmdline("quiet", ip=None, gateway=None, dns=None)
    assert "init_on_free=1" in source.split()
    assert "init_on_free=1" not in plain.split()


def test_cmdline_without_network_has_only_clock() -> None:
    line = guest_cmdline("console=ttyS0", ip=None, gateway=None, dns=None, clock=5.0, tsc_khz=None)
    assert line == "console=ttyS0 ukedge.time=5.000"


def test_cmdline_defaults_clock_to_now() -> None:
    line = guest_cmdline("", ip=None, gateway=None, dns=None, tsc_khz=None)
    assert float(line.removeprefix("ukedge.time=")) > 1.6e9


def test_host_tsc_is_plausible_and_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    khz = host_tsc_khz()
    if khz is None:
        pytest.skip("this host has no invariant TSC (or is not x86_64)")
    assert 100_000 < khz < 10_000_000  # 100 MHz .. 10 GHz

    def measure_again(root: object) -> int | None:
        raise AssertionError("the TSC was measured again; it is cached per host boot")

    monkeypatch.setattr(_tsc, "_measure", measure_again)
    assert host_tsc_khz() == khz


def test_cmdline_ip_without_prefix_gets_24() -> None:
    line = guest_cmdline("", ip="192.168.7.9", gateway=None, dns=None, clock=1.0)
    assert "ukedge.ip=192.168.7.9/24" in line.split()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ip": "10.0.2.300/24"}, "guest ip"),
        ({"ip": "10.0.2.15/40"}, "guest ip"),
        ({"ip": "10.0.2.15/24", "gateway": "gw"}, "guest gw"),
        ({"ip": "10.0.2.15/24", "dns": "1.2.3"}, "guest dns"),
        ({"gateway": "10.0.2.2"}, "needs a guest ip"),
        ({"tsc_khz": 5}, "TSC frequency"),
    ],
)
def test_cmdline_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "ip": None,
        "gateway": None,
        "dns": None,
        "tsc_khz": None,
    }
    args.update(kwargs)
    with pytest.raises(UsageError, match=message):
        guest_cmdline("console=ttyS0", **args)  # type: ignore[arg-type]


def test_runtime_image_directories_go_on_the_command_line_checked() -> None:
    line = guest_cmdline("quiet", ip=None, gateway=None, dns=None, ro_mounts=("/lib", "/usr"))
    assert "ukedge.ro=/lib,/usr" in line.split()
    assert "ukedge.ro" not in guest_cmdline("quiet", ip=None, gateway=None, dns=None)
    for bad in ("usr", "/a,b", "/a b"):
        with pytest.raises(UsageError, match="runtime image directory"):
            guest_cmdline("quiet", ip=None, gateway=None, dns=None, ro_mounts=(bad,))
