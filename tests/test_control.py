"""The control plane's restart bookkeeping on real sockets: a reset, the survivors' rejoin, a parked replacement."""
from contextlib import contextmanager
from types import SimpleNamespace

import zmq

from coordinator.control import Hub, Membership, Rejoin
from protocol import Kind, Message
from protocol.sockets import recv, send


def hello(sock: zmq.Socket, tmp_path, stage: int) -> None:
    send(sock, Message(Kind.HELLO, f"w{stage}", -1, {"endpoint": f"ipc://{tmp_path}/inbox-{stage}", "stage": stage,
                                                     "host": "here", "pid": stage, "key": ""}))


@contextmanager
def control(tmp_path, n_workers: int, n_socks: int):
    """(hub, members, rejoin, DEALER sockets to play the workers), all closed after the with-block."""
    ctx = zmq.Context()
    hub = Hub(ctx, f"ipc://{tmp_path}/control", 5.0)
    members = Membership(hub, n_workers)
    socks = [ctx.socket(zmq.DEALER) for _ in range(n_socks)]
    try:
        yield hub, members, Rejoin(members), socks
    finally:
        for sock in socks:
            sock.close(linger=0)
        hub.close()
        ctx.term()


def test_rejoin_is_complete_only_once_the_survivors_rejoined_and_the_lost_stage_is_replaced(tmp_path):
    # stage 1, the stage 2 that is lost, its replacement
    with control(tmp_path, 2, 3) as (hub, members, rejoin, socks):
        for stage, sock in ((1, socks[0]), (2, socks[1])):
            sock.connect(hub.endpoint)
            hello(sock, tmp_path, stage)
        members.register(10)
        assert rejoin.complete()
        for m in members.members.values():
            m.role = "layer"   # as assigned
        rejoin.reset({2})
        assert not rejoin.complete() and len(members.members) == 1
        assert recv(socks[0])[1].kind is Kind.RESET
        socks[2].connect(hub.endpoint)
        hello(socks[2], tmp_path, 2)
        hub.pump(lambda: len(rejoin.parked) == 1, 10, "the replacement's hello")
        assert not rejoin.complete() and len(members.members) == 1   # parked: stage 1 has not rejoined yet
        hello(socks[0], tmp_path, 1)
        rejoin.wait(10, "stage 1 to rejoin")
        assert rejoin.complete() and not rejoin.parked and sorted(members.by_stage()) == [1, 2]


def test_a_survivor_lost_before_it_rejoined_joins_the_restart_and_frees_the_parked_replacement(tmp_path):
    # stages 1, 2 and 3, then stage 2's replacement
    with control(tmp_path, 3, 4) as (hub, members, rejoin, socks):
        for stage, sock in enumerate(socks[:3], 1):
            sock.connect(hub.endpoint)
            hello(sock, tmp_path, stage)
        members.register(10)
        for m in members.members.values():
            m.role = "layer"   # as assigned
        rejoin.reset({2})
        hello(socks[2], tmp_path, 3)   # stage 3 rejoins; stage 1 never does
        socks[3].connect(hub.endpoint)
        hello(socks[3], tmp_path, 2)
        hub.pump(lambda: len(rejoin.parked) == 1 and not members.by_stage()[3].rejoining, 10, "hellos")
        rejoin.reset({1})   # stage 1 lost in the restart under way: nobody is left to rejoin
        assert not rejoin.parked and sorted(members.by_stage()) == [2, 3]
        assert not rejoin.complete()   # until stage 1's replacement registers


def test_a_hello_for_a_local_stage_from_another_process_than_its_own_is_refused(tmp_path):
    """The hello of a replacement that died while parked must not take the place of the one started after it."""
    with control(tmp_path, 1, 2) as (hub, members, rejoin, socks):
        members.procs = {1: SimpleNamespace(pid=4242, poll=lambda: None)}   # the worker started for stage 1
        for sock, pid in zip(socks, (1, 4242)):
            sock.connect(hub.endpoint)
            send(sock, Message(Kind.HELLO, "w", -1, {"endpoint": f"ipc://{tmp_path}/inbox-{pid}", "stage": 1,
                                                     "host": "here", "pid": pid, "key": ""}))
            if pid == 1:
                hub.pump(lambda: hub.drops.counts["refused"] == 1, 10, "the refusal")
                assert not members.members and recv(sock)[1].kind is Kind.REFUSE
        members.register(10)
        assert [m.hello["pid"] for m in members.members.values()] == [4242]
