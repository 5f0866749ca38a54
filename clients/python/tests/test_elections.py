"""Elections (``client.campaign``, ``client.observe``) against a live server, on the local store
and on S3."""

from __future__ import annotations

import datetime as dt
import threading
import urllib.parse
from typing import List

import pytest

from s3lock_client import Client, LeaseLost, Leadership, LockHeld, NotHolder

from conftest import USER_TOKEN, Server
from relay import Relay


def test_a_campaign_leads_proclaims_and_resigns_on_leaving_the_block(
    client: Client, key: str
) -> None:
    with client.campaign(key, value={"addr": "10.0.0.1:80"}, ttl=10, candidate="alice") as leader:
        assert isinstance(leader, Leadership)
        assert leader.term == 1 and not leader.lost.is_set()
        seen = client.election(key)
        assert (seen.leader, seen.value, seen.term) == ("alice", {"addr": "10.0.0.1:80"}, 1)
        assert seen.token is None, "only the leader is shown its token"
        with pytest.raises(LockHeld) as held:
            client.campaign(key, candidate="bob").__enter__()
        assert held.value.owner == "alice"
        leader.proclaim("10.0.0.2:80")
        assert client.election(key).value == "10.0.0.2:80"
        assert leader.value == "10.0.0.2:80"
        assert leader.token not in repr(leader)
    after = client.election(key)
    assert after.leader is None and after.value is None
    with client.campaign(key, candidate="bob") as bob:
        assert bob.term == 2


def test_a_waiting_candidate_takes_over_when_the_leader_leaves(client: Client, key: str) -> None:
    terms: List[int] = []
    alice = client.campaign(key, candidate="alice", ttl=10)
    alice.__enter__()

    def follower() -> None:
        with client.campaign(key, candidate="bob", ttl=10, wait=8) as bob:
            terms.append(bob.term)

    t = threading.Thread(target=follower)
    t.start()
    alice.__exit__(None, None, None)
    t.join(30)
    assert terms == [2]


def test_leadership_is_marked_lost_before_the_lease_ends_when_renewals_fail(
    server: Server, key: str
) -> None:
    parsed = urllib.parse.urlsplit(server.url)
    relay = Relay((str(parsed.hostname), int(parsed.port or 80)))
    try:
        via_relay = Client(relay.url, USER_TOKEN, 2.0)
        with pytest.raises(LeaseLost):
            with via_relay.campaign(key, ttl=6) as leader:
                expires_at = leader.election.expires_at
                assert expires_at is not None
                relay.cut()
                assert leader.lost.wait(15), "leadership was never marked lost"
                lost_at = dt.datetime.now(dt.timezone.utc)
                assert lost_at < expires_at
                with pytest.raises(LeaseLost):
                    leader.check()
                with pytest.raises(LeaseLost):
                    leader.proclaim("too late")
    finally:
        relay.close()


def test_observe_shows_the_leader_no_leader_and_the_next_leader(client: Client, key: str) -> None:
    events = client.observe(key)
    first = next(events)
    assert first.kind == "free" and first.election.leader is None
    with client.campaign(key, value="a:80", candidate="alice"):
        acquired = next(events)
        assert (acquired.kind, acquired.election.leader) == ("acquired", "alice")
        assert acquired.election.value == "a:80" and acquired.election.term == 1
    gone = next(events)
    assert (gone.kind, gone.election.leader) == ("released", None)
    with client.campaign(key, candidate="bob", ttl=1):
        nxt = next(events)
        assert (nxt.election.leader, nxt.election.term) == ("bob", 2)


def test_proclaiming_with_a_stale_token_is_refused(client: Client, key: str) -> None:
    with client.campaign(key, ttl=10) as leader:
        token = leader.token
    with pytest.raises(NotHolder):
        client.proclaim(key, token, "late")
