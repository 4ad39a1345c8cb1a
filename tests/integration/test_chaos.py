"""The short chaos run of CI: 90 s of purchases under 40 random SIGKILLs, one
broker and one PostgreSQL restart, and second replicas for the middle third;
then every invariant holds (see chaos.py for the long run)."""

from chaos import chaos


def test_short_chaos_run_keeps_every_invariant():
    report = chaos(duration=90, kills_wanted=40, infra_restarts=1)
    assert report["kills"] >= 30
    assert report["purchases_completed"] > 0
