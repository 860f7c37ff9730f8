"""Endpoints a worker is given: IPv6 refused in one line (every socket here is IPv4), bad addresses too."""
import pytest

from coordinator.cli import main
from protocol.sockets import endpoint_fault, tcp_host

IPV6 = ["tcp://::1:5555", "tcp://[::1]:5555", "tcp://[fe80::1%eth0]:5555", "tcp://::ffff:127.0.0.1:5555"]


@pytest.mark.parametrize("endpoint", IPV6)
def test_ipv6_endpoints_are_refused_by_what_parses_them(endpoint):
    assert "IPv6 endpoints are not supported" in endpoint_fault(endpoint)


@pytest.mark.parametrize("endpoint, host", [("tcp://127.0.0.1:5555", "127.0.0.1"), ("tcp://node-3:1", "node-3"),
                                            ("ipc:///tmp/x", "")])
def test_ipv4_endpoints_pass_and_give_their_host(endpoint, host):
    assert endpoint_fault(endpoint) is None and tcp_host(endpoint) == host


@pytest.mark.parametrize("argv", [["--coordinator", e] for e in IPV6]
                         + [["--coordinator", "tcp://127.0.0.1:9", "--advertise", a] for a in ("::1", "[::1]")])
def test_a_worker_given_ipv6_says_so_in_one_line(argv, capsys):
    assert main(["worker", *argv, "--insecure"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dni worker: error: --") and err.count("\n") == 1 and "IPv" in err, err


@pytest.mark.parametrize("coordinator", ["tcp://@:5555", "tcp://no-such-host.invalid:5555"])
def test_a_coordinator_host_that_does_not_resolve_is_a_one_line_error(coordinator, capsys):
    assert main(["worker", "--coordinator", coordinator, "--insecure"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dni worker: error: cannot find a local address") and err.count("\n") == 1, err


def test_an_advertised_address_this_host_does_not_have_is_a_one_line_error(capsys):
    # 192.0.2.0/24 is TEST-NET-1: documentation only, on no interface.
    assert main(["worker", "--coordinator", "tcp://127.0.0.1:9", "--advertise", "192.0.2.1", "--insecure"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dni worker: cannot listen on 192.0.2.1") and err.count("\n") == 1, err


def test_a_coordinator_bound_to_ipv6_says_so_in_one_line(tmp_path, capsys):
    argv = ["coordinator", "--bind", "tcp://[::1]:5555", "--insecure", "--workers", "3", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "IPv6 endpoints are not supported" in err and err.count("\n") == 1, err
